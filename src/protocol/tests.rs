use super::*;

const PKG: &str = "linux-6.7.arch1-1-x86_64.pkg.tar.zst";

fn query() -> Query {
    Query {
        version: 1,
        nonce: [1, 2, 3, 4, 5, 6, 7, 8],
        file_name: PKG.into(),
        arch: "x86_64".into(),
        claim: None,
        quiet: false,
        link: 0,
    }
}

#[test]
fn query_round_trips_and_is_padded() {
    let q = query();
    let bytes = q.encode().unwrap();
    assert!(bytes.len() >= MIN_QUERY_LEN);
    assert_eq!(Query::decode(&bytes), Ok(q));
    let short = Query {
        file_name: "a-1-1-any.pkg.tar".into(),
        arch: String::new(),
        ..query()
    };
    let bytes = short.encode().unwrap();
    assert_eq!(bytes.len(), MIN_QUERY_LEN);
    assert_eq!(Query::decode(&bytes), Ok(short));
}

/// Every holding encodes to `len` bytes in `version` and decodes back to itself.
fn assert_round_trips(version: u8, len: usize, holdings: &[Holding]) {
    for &holding in holdings {
        let a = Answer {
            version,
            nonce: [9; 8],
            daemon_id: [0xab; 8],
            holding,
            extra: Extra::default(),
        };
        let bytes = a.encode();
        assert_eq!(bytes.len(), len);
        assert_eq!(Answer::decode(&bytes), Ok(a));
    }
}

#[test]
fn answer_round_trips() {
    let have = Holding::Have {
        http_port: 15678,
        size: 123_456_789_012,
        mtime: 1_700_000_000,
    };
    assert_round_trips(1, ANSWER_LEN, &[have, Holding::Miss]);
}

#[test]
fn an_answer_is_never_larger_than_any_valid_query() {
    let smallest = Query {
        version: 1,
        nonce: [0; 8],
        file_name: "a.pkg.tar".into(),
        arch: String::new(),
        claim: None,
        quiet: false,
        link: 0,
    }
    .encode()
    .unwrap();
    assert!(Query::decode(&smallest).is_ok());
    assert!(ANSWER_LEN <= smallest.len() && ANSWER_V2_LEN <= smallest.len());
    assert!(ANSWER_V3_LEN <= smallest.len() && ANSWER_V5_LEN <= smallest.len());
    // And nothing shorter than the floor is accepted at all.
    for len in 0..MIN_QUERY_LEN {
        assert!(Query::decode(&smallest[..len.min(smallest.len())]).is_err());
    }
}

#[test]
fn rejections() {
    let good = query().encode().unwrap();

    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(Query::decode(&bad), Err(Reject::BadMagic));

    let mut bad = good.clone();
    bad[4] = 6;
    assert_eq!(Query::decode(&bad), Err(Reject::UnknownVersion(6)));

    let mut bad = good.clone();
    bad[5] = KIND_ANSWER;
    assert_eq!(Query::decode(&bad), Err(Reject::WrongKind));

    assert_eq!(Query::decode(&good[..20]), Err(Reject::TooShort));
    assert_eq!(Query::decode(&vec![0u8; 2000]), Err(Reject::TooLong));

    // Name length pointing past the end.
    let mut bad = good.clone();
    bad[14] = 250;
    assert!(Query::decode(&bad).is_err());

    // Garbage after the padding.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] = 7;
    assert_eq!(Query::decode(&bad), Err(Reject::BadLength));

    // Names that are not plain package files.
    for name in [
        "../etc/passwd",
        "core.db",
        "a/b.pkg.tar.zst",
        ".hidden.pkg.tar",
        "x.pkg.tar.zst.part",
    ] {
        let q = Query {
            file_name: name.into(),
            ..query()
        };
        assert_eq!(
            Query::decode(&q.encode().unwrap()),
            Err(Reject::BadName),
            "{name}"
        );
    }
    // A name the format cannot carry is refused, not truncated into another name.
    let long = Query {
        file_name: format!("{}.pkg.tar.zst", "a".repeat(250)),
        ..query()
    };
    assert_eq!(long.encode(), Err(Reject::BadLength));
    let exact = Query {
        file_name: format!("{}.pkg.tar.zst", "a".repeat(243)),
        ..query()
    };
    assert_eq!(exact.file_name.len(), 255);
    assert_eq!(Query::decode(&exact.encode().unwrap()), Ok(exact));

    let a = Answer {
        version: 1,
        nonce: [0; 8],
        daemon_id: [0; 8],
        holding: Holding::Miss,
        extra: Extra::default(),
    }
    .encode();
    assert_eq!(Answer::decode(&a[..40]), Err(Reject::TooShort));
    assert_eq!(Query::decode(&a), Err(Reject::TooShort));
    let mut have_without_port = a.clone();
    have_without_port[14] = 1;
    assert_eq!(Answer::decode(&have_without_port), Err(Reject::BadLength));
}

/// Cases per seed for the mutation fuzzer below; `PACSERVE_FUZZ_CASES` raises it for a long run.
fn fuzz_cases() -> u64 {
    std::env::var("PACSERVE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn garbage_never_panics_and_never_amplifies() {
    // Mutation fuzzing: valid datagrams with random bytes changed, inserted and cut, plus pure
    // noise. Invariants: no panic; a decoded query names a shareable file; the answer to any
    // accepted query is never larger than the query.
    let seeds = [
        query().encode().unwrap(),
        Query {
            arch: String::new(),
            ..query()
        }
        .encode()
        .unwrap(),
        Answer {
            version: 1,
            nonce: [1; 8],
            daemon_id: [2; 8],
            holding: Holding::Miss,
            extra: Extra::default(),
        }
        .encode(),
        v2_query(Some([7; 8])).encode().unwrap(),
        growing_answer(15678, 1000, 10),
        v3_query(Some([7; 8]), true).encode().unwrap(),
        v3_answer(true, 7),
        Query {
            version: 4,
            ..v3_query(Some([7; 8]), false)
        }
        .encode()
        .unwrap(),
        Answer {
            version: 4,
            nonce: [1; 8],
            daemon_id: [2; 8],
            holding: Holding::Claiming,
            extra: Extra::default(),
        }
        .encode(),
        v5_query(Some([7; 8]), 1000).encode().unwrap(),
        v5_answer(Holding::Claiming, 100),
    ];
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut accepted, mut total) = (0u64, 0u64);
    for seed in &seeds {
        for _ in 0..fuzz_cases() {
            let mut d = seed.clone();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                match r % 4 {
                    0 => {
                        let i = (r >> 8) as usize % d.len().max(1);
                        if !d.is_empty() {
                            d[i] = (r >> 32) as u8;
                        }
                    }
                    1 => d.truncate((r >> 8) as usize % (d.len() + 1)),
                    2 => d.insert((r >> 8) as usize % (d.len() + 1), (r >> 32) as u8),
                    _ => d = (0..(r >> 8) % 400).map(|_| next() as u8).collect(),
                }
            }
            total += 1;
            if let Ok(q) = Query::decode(&d) {
                accepted += 1;
                assert!(name::is_shareable_name(&q.file_name));
                let answer = Answer {
                    version: q.version,
                    nonce: q.nonce,
                    daemon_id: [0; 8],
                    holding: Holding::Growing {
                        http_port: 1,
                        size: 2,
                        landed: 1,
                    },
                    extra: Extra::default(),
                };
                assert!(answer.encode().len() <= d.len(), "amplification");
            }
            let _ = Answer::decode(&d);
        }
    }
    eprintln!(
        "FUZZ protocol: {total} datagrams, {accepted} accepted as queries, no panic, no amplification"
    );
}

fn growing_answer(http_port: u16, size: u64, landed: u64) -> Vec<u8> {
    Answer {
        version: 2,
        nonce: [1; 8],
        daemon_id: [2; 8],
        holding: Holding::Growing {
            http_port,
            size,
            landed,
        },
        extra: Extra::default(),
    }
    .encode()
}

fn v2_query(claim: Option<[u8; 8]>) -> Query {
    Query {
        version: 2,
        claim,
        ..query()
    }
}

#[test]
fn version_2_queries_and_answers_round_trip() {
    for claim in [None, Some([3; 8])] {
        let q = v2_query(claim);
        assert_eq!(Query::decode(&q.encode().unwrap()), Ok(q));
    }
    let growing = Holding::Growing {
        http_port: 15678,
        size: 1 << 40,
        landed: 1 << 20,
    };
    let have = Holding::Have {
        http_port: 15678,
        size: 5,
        mtime: 9,
    };
    let all = [have, growing, Holding::Claiming, Holding::Miss];
    assert_round_trips(2, ANSWER_V2_LEN, &all);
}

#[test]
fn a_version_1_answer_cannot_say_growing_or_claiming() {
    for holding in [
        Holding::Growing {
            http_port: 15678,
            size: 10,
            landed: 3,
        },
        Holding::Claiming,
    ] {
        let a = Answer {
            version: 1,
            nonce: [4; 8],
            daemon_id: [5; 8],
            holding,
            extra: Extra::default(),
        };
        let bytes = a.encode();
        assert_eq!(bytes.len(), ANSWER_LEN);
        assert_eq!(Answer::decode(&bytes).map(|a| a.holding), Ok(Holding::Miss));
    }
}

#[test]
fn version_2_rejections() {
    let good = v2_query(None).encode().unwrap();
    // A claimant id without the CLAIM flag, and an unknown flag.
    let flags_at = 6 + 8 + 1 + PKG.len() + 1 + "x86_64".len();
    let mut bad = good.clone();
    bad[flags_at + 3] = 1;
    assert_eq!(Query::decode(&bad), Err(Reject::BadLength));
    let mut bad = good.clone();
    bad[flags_at] = 2;
    assert_eq!(Query::decode(&bad), Err(Reject::BadLength));
    let growing = growing_answer(1, 10, 10);
    // More landed than the size, no port, a v1-sized v2 answer, an unknown state.
    let mut bad = growing.clone();
    bad[48] = 11;
    assert_eq!(Answer::decode(&bad), Err(Reject::BadLength));
    let mut bad = growing.clone();
    bad[23..25].copy_from_slice(&[0, 0]);
    assert_eq!(Answer::decode(&bad), Err(Reject::BadLength));
    assert_eq!(
        Answer::decode(&growing[..ANSWER_LEN]),
        Err(Reject::TooShort)
    );
    let mut bad = growing.clone();
    bad[14] = 4;
    assert_eq!(Answer::decode(&bad), Err(Reject::BadLength));
    // The GROWING state in a v1 answer is not a thing.
    let mut v1 = Answer {
        version: 1,
        nonce: [0; 8],
        daemon_id: [0; 8],
        holding: Holding::Have {
            http_port: 1,
            size: 1,
            mtime: 1,
        },
        extra: Extra::default(),
    }
    .encode();
    v1[14] = 2;
    assert_eq!(Answer::decode(&v1), Err(Reject::BadLength));
}

fn v3_query(claim: Option<[u8; 8]>, quiet: bool) -> Query {
    Query {
        version: 3,
        claim,
        quiet,
        ..query()
    }
}

fn v3_answer(sig: bool, uploads: u16) -> Vec<u8> {
    Answer {
        version: 3,
        nonce: [1; 8],
        daemon_id: [2; 8],
        holding: Holding::Have {
            http_port: 15678,
            size: 100,
            mtime: 1,
        },
        extra: Extra {
            sig,
            uploads,
            link: 0,
        },
    }
    .encode()
}

#[test]
fn version_3_queries_and_answers_round_trip() {
    for claim in [None, Some([3; 8])] {
        for quiet in [false, true] {
            let q = v3_query(claim, quiet);
            assert_eq!(Query::decode(&q.encode().unwrap()), Ok(q));
        }
    }
    for sig in [false, true] {
        for uploads in [0, 7, u16::MAX] {
            let bytes = v3_answer(sig, uploads);
            assert_eq!(bytes.len(), ANSWER_V3_LEN);
            let decoded = Answer::decode(&bytes).unwrap();
            assert_eq!(
                decoded.extra,
                Extra {
                    sig,
                    uploads,
                    link: 0
                }
            );
        }
    }
    let growing = Holding::Growing {
        http_port: 15678,
        size: 1 << 40,
        landed: 1 << 20,
    };
    assert_round_trips(
        3,
        ANSWER_V3_LEN,
        &[growing, Holding::Claiming, Holding::Miss],
    );
}

#[test]
fn older_versions_carry_no_version_3_fields() {
    // QUIET is no flag of version 2: a v2 daemon must not see a query it cannot honour.
    let quiet_v2 = Query {
        version: 2,
        quiet: true,
        ..query()
    };
    assert_eq!(
        Query::decode(&quiet_v2.encode().unwrap()).map(|q| q.quiet),
        Ok(false)
    );
    for version in [1, 2] {
        let a = Answer {
            version,
            nonce: [1; 8],
            daemon_id: [2; 8],
            holding: Holding::Have {
                http_port: 1,
                size: 1,
                mtime: 1,
            },
            extra: Extra {
                sig: true,
                uploads: 9,
                link: 1000,
            },
        };
        assert_eq!(Answer::decode(&a.encode()).unwrap().extra, Extra::default());
    }
    // A v3 flag a v2 query may not carry, an unknown v3 flag, an unknown answer flag.
    let v2 = v2_query(None).encode().unwrap();
    let flags_at = 6 + 8 + 1 + PKG.len() + 1 + "x86_64".len();
    let mut bad = v2.clone();
    bad[flags_at] = 2;
    assert_eq!(Query::decode(&bad), Err(Reject::BadLength));
    let mut bad = v3_query(None, false).encode().unwrap();
    bad[flags_at] = 4;
    assert_eq!(Query::decode(&bad), Err(Reject::BadLength));
    let mut bad = v3_answer(false, 0);
    bad[49] = 2;
    assert_eq!(Answer::decode(&bad), Err(Reject::BadLength));
    assert_eq!(
        Answer::decode(&v3_answer(true, 1)[..ANSWER_V2_LEN]),
        Err(Reject::TooShort)
    );
}

#[test]
fn version_4_is_laid_out_as_version_3() {
    let claim = Query {
        version: 4,
        ..v3_query(Some([3; 8]), false)
    };
    let bytes = claim.encode().unwrap();
    assert_eq!(bytes[4], 4);
    assert_eq!(Query::decode(&bytes), Ok(claim.clone()));
    let mut as_v3 = bytes.clone();
    as_v3[4] = 3;
    assert_eq!(Query::decode(&as_v3).map(|q| q.claim), Ok(claim.claim));
    assert_round_trips(
        4,
        ANSWER_V3_LEN,
        &[
            Holding::Claiming,
            Holding::Miss,
            Holding::Growing {
                http_port: 15678,
                size: 10,
                landed: 5,
            },
        ],
    );
}

#[test]
fn claim_ranks_are_stable_and_spread_files_over_daemons() {
    let ids: Vec<[u8; 8]> = (0..8u8).map(|i| [i, 1, 2, 3, 4, 5, 6, 7]).collect();
    let leader = |file: &str| {
        ids.iter()
            .max_by_key(|id| claim_rank(file, id))
            .copied()
            .unwrap()
    };
    assert_eq!(
        claim_rank("a-1-1-any.pkg.tar.zst", &ids[0]),
        claim_rank("a-1-1-any.pkg.tar.zst", &ids[0])
    );
    let leaders: std::collections::HashSet<[u8; 8]> = (0..15)
        .map(|i| leader(&format!("tg{i}-1.0-1-any.pkg.tar.zst")))
        .collect();
    // The lowest id led all 15 under the version 2 rule; by rank at least half the hosts lead.
    assert!(leaders.len() >= 4, "{} leaders for 15 files", leaders.len());
}

fn v5_query(claim: Option<[u8; 8]>, link: u16) -> Query {
    Query {
        version: 5,
        link,
        ..v3_query(claim, false)
    }
}

fn v5_answer(holding: Holding, link: u16) -> Vec<u8> {
    Answer {
        version: 5,
        nonce: [1; 8],
        daemon_id: [2; 8],
        holding,
        extra: Extra {
            sig: true,
            uploads: 3,
            link,
        },
    }
    .encode()
}

#[test]
fn version_5_carries_the_senders_link_and_older_versions_do_not() {
    for link in [0, 100, 1000, u16::MAX] {
        let claim = v5_query(Some([3; 8]), link);
        let bytes = claim.encode().unwrap();
        assert_eq!(bytes[4], 5);
        assert_eq!(Query::decode(&bytes), Ok(claim.clone()));
        let answer = v5_answer(Holding::Claiming, link);
        assert_eq!(answer.len(), ANSWER_V5_LEN);
        let decoded = Answer::decode(&answer).unwrap();
        assert_eq!((decoded.extra.link, decoded.extra.uploads), (link, 3));
        assert_eq!(decoded.holding, Holding::Claiming);
    }
    // The longest query of all still decodes: a 255-byte name, 32-byte arch, claim and link.
    let longest = Query {
        file_name: format!("{}.pkg.tar.zst", "a".repeat(255 - 12)),
        arch: "a".repeat(32),
        ..v5_query(Some([1; 8]), 7)
    };
    let bytes = longest.encode().unwrap();
    assert_eq!(bytes.len(), MAX_QUERY_LEN);
    assert_eq!(Query::decode(&bytes), Ok(longest));
    // Older versions say nothing of the link, in queries or answers.
    for version in [2, 3, 4] {
        let q = Query {
            version,
            ..v5_query(Some([3; 8]), 1000)
        };
        assert_eq!(Query::decode(&q.encode().unwrap()).map(|q| q.link), Ok(0));
        let a = Answer {
            version,
            ..Answer::decode(&v5_answer(Holding::Miss, 1000)).unwrap()
        };
        assert_eq!(Answer::decode(&a.encode()).unwrap().extra.link, 0);
    }
    // A version 5 answer cut to version 3's length, or a version 4 one claiming to be 5.
    let answer = v5_answer(Holding::Miss, 1000);
    assert_eq!(
        Answer::decode(&answer[..ANSWER_V3_LEN]),
        Err(Reject::TooShort)
    );
    let mut v4 = Answer::decode(&answer).unwrap();
    v4.version = 4;
    let mut v4 = v4.encode();
    v4[4] = 5;
    assert_eq!(Answer::decode(&v4), Err(Reject::TooShort));
    // A version 5 query cut before its link: its padding reads as the link, so the cut is
    // where a shorter query would end; one cut below the floor is refused.
    let bytes = v5_query(None, 1000).encode().unwrap();
    assert!(Query::decode(&bytes[..MIN_QUERY_LEN - 1]).is_err());
}

#[test]
fn a_link_is_clearly_slower_only_when_known_and_a_quarter_of_the_fastest() {
    assert!(clearly_slower(100, 1000));
    assert!(clearly_slower(250, 1000));
    assert!(!clearly_slower(251, 1000));
    assert!(!clearly_slower(1000, 2500));
    assert!(!clearly_slower(0, 1000), "unknown is not slow");
    assert!(!clearly_slower(100, 0));
    assert!(!clearly_slower(u16::MAX, u16::MAX));
    assert!(clearly_slower(1, u16::MAX));
}
