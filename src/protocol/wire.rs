//! Encoding and decoding of the discovery datagrams described in [`crate::protocol`], every
//! version. Kept apart from the spec so the rules read in one place and the byte work in
//! another; every read is bounds-checked, nothing here can panic on input.

use super::*;

const STATE_MISS: u8 = 0;
const STATE_HAVE: u8 = 1;
const STATE_GROWING: u8 = 2;
const STATE_CLAIMING: u8 = 3;
const FLAG_CLAIM: u8 = 1;
const FLAG_QUIET: u8 = 2;
const ANSWER_FLAG_SIG: u8 = 1;

impl Query {
    /// The datagram; [`Reject::BadLength`] for a name longer than 255 bytes or an architecture
    /// longer than 32, which the format cannot carry (truncating them would ask for another
    /// file).
    pub fn encode(&self) -> Result<Vec<u8>, Reject> {
        if self.file_name.is_empty()
            || self.file_name.len() > u8::MAX as usize
            || self.arch.len() > MAX_ARCH_LEN
        {
            return Err(Reject::BadLength);
        }
        let mut out =
            Vec::with_capacity(MIN_QUERY_LEN.max(26 + self.file_name.len() + self.arch.len()));
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(KIND_QUERY);
        out.extend_from_slice(&self.nonce);
        out.push(self.file_name.len() as u8);
        out.extend_from_slice(self.file_name.as_bytes());
        out.push(self.arch.len() as u8);
        out.extend_from_slice(self.arch.as_bytes());
        if self.version >= 2 {
            let mut flags = if self.claim.is_some() { FLAG_CLAIM } else { 0 };
            if self.version >= 3 && self.quiet {
                flags |= FLAG_QUIET;
            }
            out.push(flags);
            out.extend_from_slice(&self.claim.unwrap_or_default());
        }
        if self.version >= LINKED {
            out.extend_from_slice(&self.link.to_be_bytes());
        }
        if out.len() < MIN_QUERY_LEN {
            out.resize(MIN_QUERY_LEN, 0);
        }
        Ok(out)
    }

    /// Parses a query of either version, applying every rule (size floor, version, name gate).
    pub fn decode(datagram: &[u8]) -> Result<Query, Reject> {
        if datagram.len() < MIN_QUERY_LEN {
            return Err(Reject::TooShort);
        }
        if datagram.len() > MAX_QUERY_LEN.max(MIN_QUERY_LEN) {
            return Err(Reject::TooLong);
        }
        let version = check_header(datagram, KIND_QUERY)?;
        let mut r = Reader {
            buf: datagram,
            at: 6,
        };
        let nonce = r.array::<8>().ok_or(Reject::BadLength)?;
        let name_len = r.byte().ok_or(Reject::BadLength)? as usize;
        let name = r.take(name_len).ok_or(Reject::BadLength)?;
        let arch_len = r.byte().ok_or(Reject::BadLength)? as usize;
        if arch_len > MAX_ARCH_LEN {
            return Err(Reject::BadLength);
        }
        let arch = r.take(arch_len).ok_or(Reject::BadLength)?;
        let (claim, quiet) = match version {
            1 => (None, false),
            _ => {
                let flags = r.byte().ok_or(Reject::BadLength)?;
                let claimant = r.array::<8>().ok_or(Reject::BadLength)?;
                let known = match version {
                    2 => FLAG_CLAIM,
                    _ => FLAG_CLAIM | FLAG_QUIET,
                };
                if flags & !known != 0 {
                    return Err(Reject::BadLength);
                }
                let claim = match flags & FLAG_CLAIM {
                    0 if claimant == [0; 8] => None,
                    0 => return Err(Reject::BadLength),
                    _ => Some(claimant),
                };
                (claim, flags & FLAG_QUIET != 0)
            }
        };
        let link = match version {
            LINKED.. => u16::from_be_bytes(r.array::<2>().ok_or(Reject::BadLength)?),
            _ => 0,
        };
        if r.rest().iter().any(|&b| b != 0) {
            return Err(Reject::BadLength);
        }
        let file_name = std::str::from_utf8(name).map_err(|_| Reject::BadName)?;
        if !name::is_shareable_name(file_name) {
            return Err(Reject::BadName);
        }
        let arch = std::str::from_utf8(arch).map_err(|_| Reject::BadName)?;
        if !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Reject::BadName);
        }
        Ok(Query {
            version,
            nonce,
            file_name: file_name.to_owned(),
            arch: arch.to_owned(),
            claim,
            quiet,
            link,
        })
    }
}

impl Answer {
    /// Encodes in [`Answer::version`]; in version 1, GROWING and CLAIMING become MISS; the
    /// [`Extra`] of version 3 is left out of older versions, its link out of versions before 5.
    pub fn encode(&self) -> Vec<u8> {
        let holding = match (self.version, self.holding) {
            (1, Holding::Growing { .. } | Holding::Claiming) => Holding::Miss,
            (_, holding) => holding,
        };
        let (state, port, size, mtime, landed) = match holding {
            Holding::Have {
                http_port,
                size,
                mtime,
            } => (STATE_HAVE, http_port, size, mtime, size),
            Holding::Growing {
                http_port,
                size,
                landed,
            } => (STATE_GROWING, http_port, size, 0, landed),
            Holding::Claiming => (STATE_CLAIMING, 0, 0, 0, 0),
            Holding::Miss => (STATE_MISS, 0, 0, 0, 0),
        };
        let mut out = Vec::with_capacity(ANSWER_V5_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(self.version);
        out.push(KIND_ANSWER);
        out.extend_from_slice(&self.nonce);
        out.push(state);
        out.extend_from_slice(&self.daemon_id);
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&mtime.to_be_bytes());
        if self.version >= 2 {
            out.extend_from_slice(&landed.to_be_bytes());
        }
        if self.version >= 3 {
            out.push(if self.extra.sig { ANSWER_FLAG_SIG } else { 0 });
            out.extend_from_slice(&self.extra.uploads.to_be_bytes());
        }
        if self.version >= LINKED {
            out.extend_from_slice(&self.extra.link.to_be_bytes());
        }
        out
    }

    pub fn decode(datagram: &[u8]) -> Result<Answer, Reject> {
        if datagram.len() < 6 {
            return Err(Reject::TooShort);
        }
        let version = check_header(datagram, KIND_ANSWER)?;
        let len = match version {
            1 => ANSWER_LEN,
            2 => ANSWER_V2_LEN,
            3 | 4 => ANSWER_V3_LEN,
            _ => ANSWER_V5_LEN,
        };
        match datagram.len() {
            n if n < len => return Err(Reject::TooShort),
            n if n > len => return Err(Reject::TooLong),
            _ => {}
        }
        let mut r = Reader {
            buf: datagram,
            at: 6,
        };
        let nonce = r.array::<8>().ok_or(Reject::BadLength)?;
        let state = r.byte().ok_or(Reject::BadLength)?;
        let daemon_id = r.array::<8>().ok_or(Reject::BadLength)?;
        let http_port = u16::from_be_bytes(r.array::<2>().ok_or(Reject::BadLength)?);
        let size = u64::from_be_bytes(r.array::<8>().ok_or(Reject::BadLength)?);
        let mtime = u64::from_be_bytes(r.array::<8>().ok_or(Reject::BadLength)?);
        let landed = match version {
            1 => None,
            _ => Some(u64::from_be_bytes(r.array::<8>().ok_or(Reject::BadLength)?)),
        };
        let extra = match version {
            1 | 2 => Extra::default(),
            _ => {
                let flags = r.byte().ok_or(Reject::BadLength)?;
                if flags & !ANSWER_FLAG_SIG != 0 {
                    return Err(Reject::BadLength);
                }
                let uploads = u16::from_be_bytes(r.array::<2>().ok_or(Reject::BadLength)?);
                let link = match version {
                    LINKED.. => u16::from_be_bytes(r.array::<2>().ok_or(Reject::BadLength)?),
                    _ => 0,
                };
                Extra {
                    sig: flags & ANSWER_FLAG_SIG != 0,
                    uploads,
                    link,
                }
            }
        };
        let holding = match (state, landed) {
            (STATE_HAVE, _) if http_port != 0 => Holding::Have {
                http_port,
                size,
                mtime,
            },
            (STATE_MISS, _) => Holding::Miss,
            (STATE_GROWING, Some(landed)) if http_port != 0 && landed <= size => Holding::Growing {
                http_port,
                size,
                landed,
            },
            (STATE_CLAIMING, Some(_)) => Holding::Claiming,
            _ => return Err(Reject::BadLength),
        };
        Ok(Answer {
            version,
            nonce,
            daemon_id,
            holding,
            extra,
        })
    }
}

/// Checks magic, version and kind; returns the version.
fn check_header(datagram: &[u8], kind: u8) -> Result<u8, Reject> {
    if datagram[..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if !VERSIONS.contains(&datagram[4]) {
        return Err(Reject::UnknownVersion(datagram[4]));
    }
    if datagram[5] != kind {
        return Err(Reject::WrongKind);
    }
    Ok(datagram[4])
}

/// A bounds-checked cursor: every read returns None instead of panicking past the end.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.at..).unwrap_or(&[])
    }
}
