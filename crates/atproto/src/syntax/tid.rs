use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::string_type;

/// The base32 "sortable" alphabet TIDs are written in.
const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

string_type!(
    /// A timestamp identifier: 13 characters of base32-sortable encoding a 53-bit microsecond
    /// timestamp and a 10-bit clock id. Used as commit revs and default record keys.
    Tid, "TID", check_tid
);

fn check_tid(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    if b.len() != 13 {
        return Err("must be exactly 13 characters".into());
    }
    if !b.iter().all(|c| ALPHABET.contains(c)) {
        return Err("must use the base32-sortable alphabet".into());
    }
    // The high bit of the 64-bit value is always zero, so the first character is at most 'j'.
    if !b"234567abcdefghij".contains(&b[0]) {
        return Err("first character out of range".into());
    }
    Ok(())
}

impl Tid {
    /// Builds a TID from a microsecond timestamp and a clock id (only its low 10 bits are used).
    pub fn from_parts(micros: u64, clock_id: u16) -> Self {
        let value = ((micros & ((1 << 53) - 1)) << 10) | u64::from(clock_id & 0x3ff);
        Self::from_u64(value)
    }

    fn from_u64(mut value: u64) -> Self {
        let mut out = [0u8; 13];
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(value & 31) as usize];
            value >>= 5;
        }
        Self(String::from_utf8(out.to_vec()).expect("alphabet is ASCII"))
    }

    /// The 63-bit integer this TID encodes.
    pub fn to_u64(&self) -> u64 {
        self.0.bytes().fold(0u64, |acc, c| {
            let digit = ALPHABET.iter().position(|a| *a == c).expect("validated") as u64;
            (acc << 5) | digit
        })
    }

    /// Microseconds since the Unix epoch.
    pub fn timestamp_micros(&self) -> u64 {
        self.to_u64() >> 10
    }
}

/// Hands out strictly increasing TIDs, even if the wall clock stalls or steps back.
#[derive(Debug)]
pub struct TidGenerator {
    clock_id: u16,
    last: Mutex<u64>,
}

impl TidGenerator {
    /// A generator with the given clock id (low 10 bits used).
    pub fn new(clock_id: u16) -> Self {
        Self { clock_id: clock_id & 0x3ff, last: Mutex::new(0) }
    }

    /// A generator with a random clock id.
    pub fn with_random_clock_id() -> Self {
        Self::new(rand::random::<u16>())
    }

    /// The next TID: later than every TID this generator returned before.
    pub fn next(&self) -> Tid {
        self.next_after(None)
    }

    /// The next TID, also strictly later than `prev` (e.g. the repo's current rev).
    pub fn next_after(&self, prev: Option<&Tid>) -> Tid {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut micros = now.max(*last + 1);
        if let Some(prev) = prev {
            micros = micros.max(prev.timestamp_micros() + 1);
        }
        *last = micros;
        Tid::from_parts(micros, self.clock_id)
    }
}

impl Default for TidGenerator {
    fn default() -> Self {
        Self::with_random_clock_id()
    }
}
