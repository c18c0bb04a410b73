//! A streaming scanner that finds which candidate store paths a byte stream mentions.
//!
//! Nix decides the references of a build output by looking for the 32-character hash part of
//! every candidate store path (the inputs of the build and its own outputs) anywhere in the
//! output's bytes (its NAR serialisation). [`ReferenceScanner`] does the same over chunks of any
//! size: a hash part may straddle any number of chunk boundaries.
//!
//! How it stays fast on every kind of input:
//!
//! * **Skipping**, as Nix does: a hash part is a run of 32 nix32 characters, so the scanner looks
//!   at the *last* byte of the 32-byte window at `p` first and, when it is outside the alphabet
//!   (7 bytes in 8 of random data), skips all 32 windows that contain it.
//! * **One lookup per 8 windows**: otherwise the windows starting at `p..p + 8` all contain the
//!   8 bytes at `p + 7`, at offsets 7 down to 0. The scanner indexes the 8-byte pieces of every
//!   candidate at offsets 0 to 7, so a single probe of a bit filter covers 8 windows, and only a
//!   hit in the filter costs a table look-up and a full 32-byte comparison.
//!
//! The work per input byte is bounded whatever the data: probe sequences depend only on the
//! candidates, never on the input.

use std::collections::HashSet;

use thiserror::Error;

use crate::nixbase32;
use crate::store_path::{HASH_PART_LEN, StorePath};

const LEN: usize = HASH_PART_LEN;
/// Length of the indexed pieces of a candidate.
const PIECE: usize = 8;

/// Whether each byte value is a nix32 character.
const IS_NIX32: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 32 {
        table[nixbase32::ALPHABET[i] as usize] = true;
        i += 1;
    }
    table
};

/// Most candidates one scanner takes.
pub const MAX_CANDIDATES: usize = 1 << 24;

/// Why a candidate set was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceScanError {
    /// A candidate is not 32 nix32 characters.
    #[error(
        "reference candidate {index} ('{text}') is not a store path hash part of {LEN} nix32 characters"
    )]
    BadHashPart {
        /// Position of the candidate in the input.
        index: usize,
        /// The candidate (possibly shortened, lossily decoded).
        text: String,
    },
    /// More than [`MAX_CANDIDATES`] candidates.
    #[error("more than {MAX_CANDIDATES} reference candidates")]
    TooManyCandidates,
}

/// Scans byte chunks for the hash parts of a fixed set of candidates.
#[derive(Debug, Clone)]
pub struct ReferenceScanner {
    /// Distinct candidates, in the order first given.
    candidates: Vec<[u8; LEN]>,
    /// Open-addressing table of the 8-byte pieces of the candidates at offsets 0 to 7:
    /// `(piece, index * 8 + offset + 1)`; a second field of 0 marks an empty slot.
    pieces: Vec<(u64, u32)>,
    /// Right shift turning a 64-bit hash into a slot of `pieces`.
    shift: u32,
    /// One bit per hash of each piece: most probes end here, in cache.
    filter: Vec<u64>,
    /// Right shift turning a 64-bit hash into a filter bit.
    filter_shift: u32,
    found: Vec<bool>,
    found_count: usize,
    /// The trailing run of nix32 bytes of everything fed so far, at most `LEN - 1` bytes.
    carry: [u8; LEN - 1],
    carry_len: usize,
    bytes_scanned: u64,
    /// With at most [`FEW_CANDIDATES`] candidates, a SIMD substring search for each (a
    /// path's own hash part, when a content address is checked): several times faster than
    /// the table's probe every 8 bytes on text, which is mostly nix32 characters.
    finders: Vec<memchr::memmem::Finder<'static>>,
}

/// Up to this many candidates, each is looked for with its own substring search.
const FEW_CANDIDATES: usize = 4;

/// The 8 bytes of `s` at `at`, little-endian.
#[inline(always)]
fn load_u64(s: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[at..at + PIECE]);
    u64::from_le_bytes(a)
}

#[inline(always)]
fn piece_hash(piece: u64) -> u64 {
    (piece ^ (piece >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl ReferenceScanner {
    /// A scanner for these hash parts (each 32 nix32 characters; duplicates are merged).
    pub fn new<I, S>(hash_parts: I) -> Result<ReferenceScanner, ReferenceScanError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut candidates = Vec::new();
        for (index, hp) in hash_parts.into_iter().enumerate() {
            let hp = hp.as_ref();
            if hp.len() != LEN || !hp.iter().all(|&c| IS_NIX32[c as usize]) {
                let text = String::from_utf8_lossy(&hp[..hp.len().min(64)]).into_owned();
                return Err(ReferenceScanError::BadHashPart { index, text });
            }
            if candidates.len() >= MAX_CANDIDATES {
                return Err(ReferenceScanError::TooManyCandidates);
            }
            let mut c = [0u8; LEN];
            c.copy_from_slice(hp);
            candidates.push(c);
        }
        Ok(ReferenceScanner::from_candidates(candidates))
    }

    /// A scanner for the hash parts of these store paths.
    pub fn for_store_paths<'a>(paths: impl IntoIterator<Item = &'a StorePath>) -> ReferenceScanner {
        let candidates = paths
            .into_iter()
            .map(|p| {
                let mut c = [0u8; LEN];
                c.copy_from_slice(p.hash_part().as_bytes());
                c
            })
            .collect();
        ReferenceScanner::from_candidates(candidates)
    }

    fn from_candidates(all: Vec<[u8; LEN]>) -> ReferenceScanner {
        let mut seen = HashSet::with_capacity(all.len());
        let candidates: Vec<[u8; LEN]> = all.into_iter().filter(|c| seen.insert(*c)).collect();
        let entries = candidates.len() * PIECE;
        let slots = (entries * 2).next_power_of_two().max(16);
        // About 16 filter bits per piece (a few per cent false positives), at least 4 KiB.
        let filter_bits = (entries * 16).next_power_of_two().clamp(1 << 15, 1 << 30);
        let mut scanner = ReferenceScanner {
            candidates,
            pieces: vec![(0, 0); slots],
            shift: 64 - slots.trailing_zeros(),
            filter: vec![0; filter_bits / 64],
            filter_shift: 64 - filter_bits.trailing_zeros(),
            found: Vec::new(),
            found_count: 0,
            carry: [0; LEN - 1],
            carry_len: 0,
            bytes_scanned: 0,
            finders: Vec::new(),
        };
        if scanner.candidates.len() <= FEW_CANDIDATES {
            scanner.finders = scanner
                .candidates
                .iter()
                .map(|c| memchr::memmem::Finder::new(&c[..]).into_owned())
                .collect();
        }
        let mask = slots - 1;
        for (index, c) in scanner.candidates.iter().enumerate() {
            for offset in 0..PIECE {
                let piece = load_u64(c, offset);
                let hash = piece_hash(piece);
                let bit = (hash >> scanner.filter_shift) as usize;
                scanner.filter[bit / 64] |= 1 << (bit % 64);
                let mut slot = (hash >> scanner.shift) as usize & mask;
                while scanner.pieces[slot].1 != 0 {
                    slot = (slot + 1) & mask;
                }
                // index < MAX_CANDIDATES = 2^24, so index * 8 + 8 fits in a u32.
                scanner.pieces[slot] = (piece, (index * PIECE + offset) as u32 + 1);
            }
        }
        scanner.found = vec![false; scanner.candidates.len()];
        scanner
    }

    /// Looks up the piece of `s` at `q` and confirms each candidate it may belong to, placed at
    /// `q - offset` within `s`. Returns `true` when every candidate has been found.
    #[inline(always)]
    fn probe(&mut self, s: &[u8], q: usize) -> bool {
        let piece = load_u64(s, q);
        let hash = piece_hash(piece);
        let bit = (hash >> self.filter_shift) as usize;
        if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
            return false;
        }
        self.probe_slow(s, q, piece, hash)
    }

    #[cold]
    fn probe_slow(&mut self, s: &[u8], q: usize, piece: u64, hash: u64) -> bool {
        let mask = self.pieces.len() - 1;
        let mut slot = (hash >> self.shift) as usize & mask;
        loop {
            let (key, value) = self.pieces[slot];
            if value == 0 {
                break;
            }
            if key == piece {
                let entry = (value - 1) as usize;
                let (index, offset) = (entry / PIECE, entry % PIECE);
                if let Some(start) = q.checked_sub(offset)
                    && !self.found[index]
                    && s.get(start..start + LEN) == Some(&self.candidates[index][..])
                {
                    self.found[index] = true;
                    self.found_count += 1;
                }
            }
            slot = (slot + 1) & mask;
        }
        self.found_count == self.candidates.len()
    }

    /// Checks every 32-byte window that lies inside `s`.
    fn scan_slice(&mut self, s: &[u8]) {
        let Some(last_start) = s.len().checked_sub(LEN) else {
            return;
        };
        if !self.finders.is_empty() {
            for (index, finder) in self.finders.iter().enumerate() {
                if !self.found[index] && finder.find(s).is_some() {
                    self.found[index] = true;
                    self.found_count += 1;
                }
            }
            return;
        }
        // Invariant: every window starting before `i` has been dealt with.
        let mut i = 0;
        while i <= last_start {
            if !IS_NIX32[s[i + LEN - 1] as usize] {
                // Every window starting at i..=i + 31 contains that byte: none can match.
                i += LEN;
                continue;
            }
            // The windows starting at i..i + 8 all contain the piece at i + 7 (at offsets 7..0):
            // one probe covers them, each candidate it yields is compared in full.
            if self.probe(s, i + PIECE - 1) {
                return;
            }
            i += PIECE;
        }
    }

    /// Feeds the next chunk of the stream.
    pub fn update(&mut self, chunk: &[u8]) {
        self.bytes_scanned += chunk.len() as u64;
        if self.found_count == self.candidates.len() {
            return;
        }
        // Windows that start in the carried tail and end in this chunk.
        if self.carry_len > 0 {
            let take = chunk.len().min(LEN - 1);
            let mut buf = [0u8; 2 * (LEN - 1)];
            buf[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            buf[self.carry_len..self.carry_len + take].copy_from_slice(&chunk[..take]);
            let joined = self.carry_len + take;
            // Only windows starting in the carry: those starting later lie in the chunk.
            let straddling = joined.min(self.carry_len + LEN - 1);
            self.scan_slice(&buf[..straddling]);
            if chunk.len() < LEN - 1 {
                // The whole chunk fits in the tail: carry on the joined bytes.
                self.set_carry_from(&buf[..joined]);
                return;
            }
        }
        self.scan_slice(chunk);
        self.set_carry_from(chunk);
    }

    /// Keeps the trailing run of nix32 bytes of `s` (at most `LEN - 1`).
    fn set_carry_from(&mut self, s: &[u8]) {
        let tail = &s[s.len().saturating_sub(LEN - 1)..];
        let run = tail
            .iter()
            .rev()
            .take_while(|&&c| IS_NIX32[c as usize])
            .count();
        self.carry[..run].copy_from_slice(&tail[tail.len() - run..]);
        self.carry_len = run;
    }

    /// Number of distinct candidates.
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Number of distinct candidates found so far.
    pub fn found_count(&self) -> usize {
        self.found_count
    }

    /// Whether every candidate has been found (further input is then not examined).
    pub fn all_found(&self) -> bool {
        self.found_count == self.candidates.len()
    }

    /// Whether this hash part is a candidate that has been found.
    pub fn is_found(&self, hash_part: &[u8]) -> bool {
        self.candidates
            .iter()
            .zip(&self.found)
            .any(|(c, f)| *f && c[..] == *hash_part)
    }

    /// The hash parts found so far, in the order the candidates were given.
    pub fn found_hash_parts(&self) -> Vec<&str> {
        self.candidates
            .iter()
            .zip(&self.found)
            .filter(|(_, f)| **f)
            .filter_map(|(c, _)| std::str::from_utf8(c).ok())
            .collect()
    }

    /// Bytes fed so far.
    pub fn bytes_scanned(&self) -> u64 {
        self.bytes_scanned
    }

    /// Forgets what was found and fed, keeping the candidates.
    pub fn reset(&mut self) {
        self.found.iter_mut().for_each(|f| *f = false);
        self.found_count = 0;
        self.carry_len = 0;
        self.bytes_scanned = 0;
    }
}

/// The candidate store paths whose hash parts occur in a stream.
#[derive(Debug, Clone)]
pub struct StorePathScanner {
    scanner: ReferenceScanner,
    paths: Vec<StorePath>,
}

impl StorePathScanner {
    /// A scanner for these paths.
    pub fn new(paths: impl IntoIterator<Item = StorePath>) -> StorePathScanner {
        let paths: Vec<StorePath> = paths.into_iter().collect();
        StorePathScanner {
            scanner: ReferenceScanner::for_store_paths(&paths),
            paths,
        }
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.scanner.update(chunk);
    }

    /// The candidate paths found so far, sorted.
    pub fn found(&self) -> std::collections::BTreeSet<StorePath> {
        let found: HashSet<&str> = self.scanner.found_hash_parts().into_iter().collect();
        self.paths
            .iter()
            .filter(|p| found.contains(p.hash_part()))
            .cloned()
            .collect()
    }

    /// The underlying hash-part scanner.
    pub fn scanner(&self) -> &ReferenceScanner {
        &self.scanner
    }
}

/// The hash parts of `candidates` that occur in `data` (a convenience for one buffer).
pub fn scan_references<I, S>(data: &[u8], candidates: I) -> Result<Vec<String>, ReferenceScanError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut s = ReferenceScanner::new(candidates)?;
    s.update(data);
    Ok(s.found_hash_parts()
        .into_iter()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator (xorshift) so the tests need no randomness crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn hash_part(&mut self) -> String {
            (0..LEN)
                .map(|_| nixbase32::ALPHABET[(self.next() % 32) as usize] as char)
                .collect()
        }
    }

    /// The obvious quadratic answer, to compare against.
    fn naive(data: &[u8], candidates: &[String]) -> Vec<String> {
        candidates
            .iter()
            .filter(|c| data.windows(LEN).any(|w| w == c.as_bytes()))
            .cloned()
            .collect()
    }

    fn scan_in_chunks(data: &[u8], candidates: &[String], chunk: usize) -> Vec<String> {
        let mut s = ReferenceScanner::new(candidates).expect("valid candidates");
        for c in data.chunks(chunk.max(1)) {
            s.update(c);
        }
        assert_eq!(s.bytes_scanned(), data.len() as u64);
        s.found_hash_parts()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    const A: &str = "g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q";
    const B: &str = "n5wkd9frr45pa74if5gpz9j7mifg27fh";

    #[test]
    fn finds_references_in_a_nar_like_stream() {
        let data = format!(
            "\0\0#!/bin/sh\nexec /nix/store/{A}-bash/bin/bash \"$@\"\n/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-x"
        );
        let c = [A.to_owned(), B.to_owned()];
        assert_eq!(scan_references(data.as_bytes(), &c).expect("scan"), vec![A]);
        let mut s = ReferenceScanner::new(&c).expect("valid");
        s.update(data.as_bytes());
        assert!(s.is_found(A.as_bytes()));
        assert!(!s.is_found(B.as_bytes()));
        assert!(
            !s.is_found(b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"),
            "non-candidates are ignored"
        );
        assert_eq!(s.found_count(), 1);
        assert!(!s.all_found());
    }

    #[test]
    fn straddles_every_split_point() {
        let data = format!("xx/nix/store/{A}-foo:{B}!");
        let c = [A.to_owned(), B.to_owned()];
        let expected = naive(data.as_bytes(), &c);
        assert_eq!(expected.len(), 2);
        let bytes = data.as_bytes();
        for split in 0..=bytes.len() {
            let mut s = ReferenceScanner::new(&c).expect("valid");
            s.update(&bytes[..split]);
            s.update(&bytes[split..]);
            assert_eq!(s.found_hash_parts(), expected, "split at {split}");
        }
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut s = ReferenceScanner::new(&c).expect("valid");
                s.update(&bytes[..a]);
                s.update(&bytes[a..b]);
                s.update(&bytes[b..]);
                assert_eq!(s.found_hash_parts(), expected, "splits at {a} and {b}");
            }
        }
    }

    #[test]
    fn every_chunk_size() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let candidates: Vec<String> = (0..50).map(|_| rng.hash_part()).collect();
        let mut data = rng.bytes(3000);
        // Plant some candidates, some of them in runs of other nix32 characters.
        for (k, c) in candidates.iter().take(20).enumerate() {
            let at = k * 140 + 7;
            data[at..at + LEN].copy_from_slice(c.as_bytes());
            if k % 2 == 0 {
                data[at + LEN..at + LEN + 5].copy_from_slice(b"abcd0");
                data[at - 3..at].copy_from_slice(b"xyz");
            }
        }
        let expected = naive(&data, &candidates);
        assert_eq!(expected.len(), 20);
        for chunk in 1..=(LEN * 3) {
            assert_eq!(
                scan_in_chunks(&data, &candidates, chunk),
                expected,
                "chunk {chunk}"
            );
        }
        for chunk in [97, 128, 1000, 4096] {
            assert_eq!(
                scan_in_chunks(&data, &candidates, chunk),
                expected,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn overlapping_candidates_and_edges() {
        // Two candidates overlapping by 31, 16 and 1 characters, inside one run of nix32.
        let run = "0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijklmnpqrsvwxyz";
        let c: Vec<String> = [0, 1, 16, 31]
            .iter()
            .map(|&o| run[o..o + LEN].to_owned())
            .collect();
        assert_eq!(scan_in_chunks(run.as_bytes(), &c, 1), c);
        assert_eq!(scan_in_chunks(run.as_bytes(), &c, 7), c);
        assert_eq!(scan_in_chunks(run.as_bytes(), &c, 64), c);
        // A match that is the whole input, at the very start, and at the very end.
        assert_eq!(scan_in_chunks(A.as_bytes(), &[A.to_owned()], 1), vec![A]);
        assert_eq!(scan_in_chunks(A.as_bytes(), &[A.to_owned()], 32), vec![A]);
        let start = format!("{A}-rest of the file");
        let end = format!("the file ends with /nix/store/{A}");
        for chunk in 1..=40 {
            assert_eq!(
                scan_in_chunks(start.as_bytes(), &[A.to_owned()], chunk),
                vec![A]
            );
            assert_eq!(
                scan_in_chunks(end.as_bytes(), &[A.to_owned()], chunk),
                vec![A]
            );
        }
        // 31 characters of a candidate are not a match, even across chunks.
        let short = &A[1..];
        assert!(scan_in_chunks(short.as_bytes(), &[A.to_owned()], 5).is_empty());
        // Upper case is not nix32.
        let upper = A.to_uppercase();
        assert!(scan_in_chunks(upper.as_bytes(), &[A.to_owned()], 8).is_empty());
    }

    #[test]
    fn candidates_sharing_pieces() {
        // Many candidates with the same 8-byte pieces: probe chains hold several entries with the
        // same key, and every one must be confirmed on its own.
        let c: Vec<String> = (0..40)
            .map(|k| {
                let mut x = "0".repeat(LEN);
                x.replace_range(k % LEN..k % LEN + 1, if k < LEN { "z" } else { "y" });
                x
            })
            .collect();
        let mut data = "0".repeat(100);
        data.push_str(&c[5]);
        data.push_str(&"0".repeat(40));
        data.push_str(&c[35]);
        data.push_str(&"0".repeat(3));
        let expected = naive(data.as_bytes(), &c);
        assert!(expected.contains(&c[5]) && expected.contains(&c[35]));
        for chunk in [1, 3, 8, 31, 32, 33, 1000] {
            assert_eq!(
                scan_in_chunks(data.as_bytes(), &c, chunk),
                expected,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn candidates_are_validated_and_deduplicated() {
        assert!(matches!(
            ReferenceScanner::new(["short"]),
            Err(ReferenceScanError::BadHashPart { index: 0, .. })
        ));
        let err = ReferenceScanner::new([A, "e1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q"])
            .expect_err("'e' is not nix32")
            .to_string();
        assert!(err.contains("candidate 1"), "{err}");
        let s = ReferenceScanner::new([A, B, A]).expect("valid");
        assert_eq!(s.candidate_count(), 2);
        let empty = ReferenceScanner::new(Vec::<&str>::new()).expect("empty set");
        assert!(empty.all_found());
    }

    #[test]
    fn store_path_scanner_and_reset() {
        let a = StorePath::from_base_name(&format!("{A}-bar")).expect("a");
        let b = StorePath::from_base_name(&format!("{B}-foo")).expect("b");
        let mut s = StorePathScanner::new([a.clone(), b.clone()]);
        s.update(format!("ref to {B} here").as_bytes());
        assert_eq!(s.found().into_iter().collect::<Vec<_>>(), vec![b]);
        let mut r = s.scanner().clone();
        r.reset();
        assert_eq!(r.found_count(), 0);
        r.update(A.as_bytes());
        assert_eq!(r.found_hash_parts(), vec![A]);
    }

    #[test]
    fn matches_naive_on_random_nix32_heavy_data() {
        let mut rng = Rng(42);
        let candidates: Vec<String> = (0..200).map(|_| rng.hash_part()).collect();
        for round in 0..20 {
            // Mostly nix32 characters, so long runs and many full windows occur.
            let mut data: Vec<u8> = (0..5000)
                .map(|_| {
                    let r = rng.next();
                    if r.is_multiple_of(50) {
                        b'/'
                    } else {
                        nixbase32::ALPHABET[(r >> 8) as usize % 32]
                    }
                })
                .collect();
            for _ in 0..5 {
                let c = &candidates[(rng.next() % 200) as usize];
                let at = (rng.next() % (5000 - LEN as u64)) as usize;
                data[at..at + LEN].copy_from_slice(c.as_bytes());
            }
            let expected = naive(&data, &candidates);
            let chunk = 1 + (rng.next() % 300) as usize;
            assert_eq!(
                scan_in_chunks(&data, &candidates, chunk),
                expected,
                "round {round}"
            );
        }
    }

    /// Up to [`FEW_CANDIDATES`] candidates take the substring-search path: the same answers
    /// as the table's, split anywhere.
    #[test]
    fn few_candidates_match_naive_and_the_table() {
        let mut rng = Rng(9);
        for count in 1..=FEW_CANDIDATES + 1 {
            let candidates: Vec<String> = (0..count).map(|_| rng.hash_part()).collect();
            let scanner = ReferenceScanner::new(&candidates).expect("valid");
            assert_eq!(
                scanner.finders.is_empty(),
                count > FEW_CANDIDATES,
                "{count} candidates"
            );
            for round in 0..30 {
                let mut data: Vec<u8> = (0..3000)
                    .map(|_| nixbase32::ALPHABET[(rng.next() >> 8) as usize % 32])
                    .collect();
                for _ in 0..rng.next() % 3 {
                    let c = &candidates[(rng.next() % count as u64) as usize];
                    let at = (rng.next() % (3000 - LEN as u64)) as usize;
                    data[at..at + LEN].copy_from_slice(c.as_bytes());
                }
                let expected = naive(&data, &candidates);
                let chunk = 1 + (rng.next() % 100) as usize;
                assert_eq!(
                    scan_in_chunks(&data, &candidates, chunk),
                    expected,
                    "{count} candidates, round {round}, chunks of {chunk}"
                );
            }
        }
    }

    /// Throughput on this machine; run with
    /// `cargo test --release -p pkgchain-store-model references::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark"]
    fn throughput() {
        let mut rng = Rng(7);
        let candidates: Vec<String> = (0..5000).map(|_| rng.hash_part()).collect();
        let random = rng.bytes(256 << 20);
        let nix32: Vec<u8> = (0..64 << 20)
            .map(|_| nixbase32::ALPHABET[(rng.next() >> 8) as usize % 32])
            .collect();
        let text: Vec<u8> =
            b"exec /nix/store/abcdefghijklmnpqrsvwxyz0123456789-name/bin/prog \"$@\"\n"
                .iter()
                .copied()
                .cycle()
                .take(64 << 20)
                .collect();
        for (what, data) in [
            ("random bytes", &random),
            ("all nix32 (worst case)", &nix32),
            ("store-path-like text", &text),
        ] {
            for chunk in [64 << 10, 1 << 20] {
                let mut s = ReferenceScanner::new(&candidates).expect("valid");
                let t = std::time::Instant::now();
                for c in data.chunks(chunk) {
                    s.update(c);
                }
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "{what}, {} candidates, {} KiB chunks: {:.2} GB/s ({} found)",
                    candidates.len(),
                    chunk >> 10,
                    data.len() as f64 / secs / 1e9,
                    s.found_count()
                );
            }
        }
    }
}
