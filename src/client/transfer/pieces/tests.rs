use super::piece::fetch_piece;
use super::*;

#[test]
fn only_big_files_with_two_sources_are_split() {
    assert!(worth_splitting(Some(SPLIT_ABOVE), 0, 2));
    assert!(!worth_splitting(Some(SPLIT_ABOVE), 0, 1));
    assert!(!worth_splitting(Some(SPLIT_ABOVE - 1), 0, 4));
    assert!(!worth_splitting(None, 0, 4));
    // What is left to fetch counts, not the whole.
    assert!(!worth_splitting(Some(SPLIT_ABOVE + 10), 11, 4));
}

/// A peer sending a piece steadily, just fast enough, cannot hold the run past the end of
/// the peers' time: the piece fails at the deadline. (The peer here would take 50 s.)
#[test]
fn a_piece_still_arriving_at_the_deadline_fails_then() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = [0u8; 1024];
        let _ = conn.read(&mut head);
        let _ = conn.write_all(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-999/1000\r\n\
              Content-Length: 1000\r\n\r\n",
        );
        for _ in 0..1000 {
            if conn.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let source = Source {
        url: format!("http://127.0.0.1:{port}/p"),
        agent: Agent::new_with_defaults(),
        credit: Credit::Mirror,
        limits: Limits::default(),
    };
    let deadline = Some(Instant::now() + Duration::from_millis(300));
    let got = fetch_piece(&source, 0..1000, 1000, deadline, &|| true);
    assert!(matches!(got, Err(Error::Timeout { .. })), "{got:?}");
    drop(source);
    let _ = server.join();
}

/// No room in the holding file ends the split without failing it: the piece is not placed.
#[test]
fn a_holding_file_without_room_is_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Output::open(&dir.path().join("f.part")).unwrap();
    out.begin_at(0).unwrap();
    std::fs::write(dir.path().join("ro"), b"").unwrap();
    // Opened read-only: every write fails, as on a full disk.
    let holding = File::open(dir.path().join("ro")).unwrap();
    let mut state = State::new(&mut out, holding, VecDeque::new());
    let record = Record {
        source: 0,
        start: PIECE,
        end: 2 * PIECE,
        sha256: [0; 32],
    };
    let placed = state.place(record, &[1; 16], Credit::Mirror);
    assert!(matches!(placed, Ok(false)));
    assert!(!state.placed(PIECE));
    // The piece at the front is appended whatever the holding file.
    let front = Record {
        start: 0,
        end: 16,
        ..record
    };
    assert!(matches!(
        state.place(front, &[2; 16], Credit::Mirror),
        Ok(true)
    ));
    assert_eq!(state.out.len(), 16);
}

#[test]
fn the_verified_file_names_the_pieces_that_were_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verified");
    let right: Vec<u8> = (0..PIECE as usize + 100).map(|i| i as u8).collect();
    std::fs::write(&path, &right).unwrap();
    let record = |source, range: std::ops::Range<usize>, bytes: &[u8]| Record {
        source,
        start: range.start as u64,
        end: range.end as u64,
        sha256: Sha256::digest(bytes).into(),
    };
    let first = 0..PIECE as usize;
    let last = PIECE as usize..right.len();
    let mut lie = right[last.clone()].to_vec();
    lie[7] ^= 1;
    let records = [
        record(0, first.clone(), &right[first]),
        record(1, last.clone(), &lie),
    ];
    let wrong = disagreeing(&records, &path).unwrap();
    assert_eq!(wrong, [records[1]]);
    // A verified file shorter than a record's end: that piece cannot be right.
    std::fs::write(&path, &right[..PIECE as usize]).unwrap();
    let wrong = disagreeing(&records, &path).unwrap();
    assert_eq!(wrong.len(), 1);
    assert_eq!(wrong[0].source, 1);
}
