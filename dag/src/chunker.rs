//! Cutting a file's contents into chunks as they stream in.
//!
//! A file of at most [`SINGLE_BLOCK_MAX`] bytes is one chunk. A larger file is cut by FastCDC
//! (v2020, normalisation level 1) with [`CDC_MIN`]/[`CDC_AVG`]/[`CDC_MAX`]. A cut is only taken
//! where at least [`CDC_MAX`] bytes lie ahead of it (or at the end of the file): a cut depends
//! on no more than the [`CDC_MAX`] bytes after the previous one, so the boundaries are exactly
//! those of chunking the whole file at once, whatever sizes the input arrives in.
//!
//! Chunks are cut from the caller's pieces in place where a piece holds [`CDC_MAX`] bytes past
//! the last cut; only what straddles two pieces is copied (into a buffer of at most
//! [`CDC_MAX`] bytes).

use fastcdc::v2020::{Normalization, cut, select_masks};

use crate::layout::{CDC_AVG, CDC_MAX, CDC_MIN, SINGLE_BLOCK_MAX};

/// A streaming chunker for one file.
pub struct Chunker {
    /// A single-block file's bytes so far; or, cutting, the uncut bytes before the current
    /// piece (fewer than [`CDC_MAX`] between calls).
    buf: Vec<u8>,
    single: bool,
    /// Announced size of the current file.
    size: u64,
    /// A single-block file already emitted straight from the caller's buffer.
    emitted: bool,
    masks: (u64, u64),
}

impl Chunker {
    /// A chunker for a file of `size` bytes (the size decides single-block or FastCDC).
    pub fn new(size: u64) -> Chunker {
        let single = size <= SINGLE_BLOCK_MAX;
        let capacity = if single { size as usize } else { CDC_MAX };
        Chunker {
            buf: Vec::with_capacity(capacity),
            single,
            size,
            emitted: false,
            masks: select_masks(CDC_AVG, Normalization::Level1),
        }
    }

    /// Resets for another file, keeping the buffer's allocation.
    pub fn reset(&mut self, size: u64) {
        self.buf.clear();
        self.single = size <= SINGLE_BLOCK_MAX;
        self.size = size;
        self.emitted = false;
        if !self.single {
            self.buf.reserve(CDC_MAX);
        }
    }

    /// Adds content; calls `emit` for every chunk that is complete.
    pub fn push<E>(
        &mut self,
        mut data: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.single {
            // The usual case: the whole small file in one piece, emitted without a copy.
            if self.buf.is_empty() && !self.emitted && data.len() as u64 == self.size {
                self.emitted = true;
                return emit(data);
            }
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        loop {
            if self.buf.is_empty() {
                // Cut in the caller's piece while a whole window lies ahead; keep the rest.
                while data.len() >= CDC_MAX {
                    let n = self.cut_len(data);
                    emit(&data[..n])?;
                    data = &data[n..];
                }
                self.buf.extend_from_slice(data);
                return Ok(());
            }
            // Bytes left from earlier pieces: complete one window with the start of this one.
            let pending = self.buf.len();
            let need = CDC_MAX - pending;
            if data.len() < need {
                self.buf.extend_from_slice(data);
                return Ok(());
            }
            self.buf.extend_from_slice(&data[..need]);
            let n = self.cut_len(&self.buf);
            emit(&self.buf[..n])?;
            if n >= pending {
                // The rest of the window is this piece's: go on cutting in the piece.
                data = &data[n - pending..];
                self.buf.clear();
            } else {
                // Earlier bytes are left: keep them, and this piece's bytes stay in `data`.
                self.buf.truncate(pending);
                self.buf.drain(..n);
            }
        }
    }

    /// Emits the remaining chunks at the end of the file.
    pub fn finish<E>(&mut self, mut emit: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if self.single {
            if !self.emitted {
                emit(&self.buf)?;
            }
            self.emitted = false;
        } else {
            let mut rest = &self.buf[..];
            while !rest.is_empty() {
                let n = self.cut_len(rest);
                emit(&rest[..n])?;
                rest = &rest[n..];
            }
        }
        self.buf.clear();
        Ok(())
    }

    fn cut_len(&self, source: &[u8]) -> usize {
        let (mask_s, mask_l) = self.masks;
        let (_, n) = cut(
            source,
            CDC_MIN,
            CDC_AVG,
            CDC_MAX,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        // `cut` returns the whole source when it is shorter than the minimum; never 0 for
        // non-empty input.
        n.clamp(1, source.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(data.len() as u64);
        let mut out = Vec::new();
        for p in data.chunks(piece.max(1)) {
            c.push::<()>(p, |ch| {
                out.push(ch.to_vec());
                Ok(())
            })
            .expect("push");
        }
        c.finish::<()>(|ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .expect("finish");
        out
    }

    #[test]
    fn boundaries_do_not_depend_on_input_pieces() {
        let data = pseudo_random(9 * 1024 * 1024 + 12345, 7);
        let whole = chunks(&data, data.len());
        assert!(whole.len() > 10, "{} chunks", whole.len());
        assert_eq!(whole.concat(), data);
        for piece in [1usize << 10, 65_536, 1_000_003, 4 * 1024 * 1024 + 1] {
            assert_eq!(chunks(&data, piece), whole, "piece size {piece}");
        }
        for c in &whole[..whole.len() - 1] {
            assert!(c.len() >= CDC_MIN && c.len() <= CDC_MAX, "{}", c.len());
        }
    }

    /// The boundaries are those of the fastcdc crate's own chunker over the whole file.
    #[test]
    fn boundaries_are_fastcdcs_over_the_whole_file() {
        use fastcdc::v2020::FastCDC;
        for (len, seed) in [(9 * 1024 * 1024 + 12345, 5), (3 * 1024 * 1024 + 1, 13)] {
            let data = pseudo_random(len, seed);
            let expected: Vec<usize> =
                FastCDC::with_level(&data, CDC_MIN, CDC_AVG, CDC_MAX, Normalization::Level1)
                    .map(|c| c.length)
                    .collect();
            for piece in [
                4096usize,
                256 * 1024,
                CDC_MAX - 1,
                CDC_MAX,
                3 * CDC_MAX + 7,
                len,
            ] {
                let got: Vec<usize> = chunks(&data, piece).iter().map(Vec::len).collect();
                assert_eq!(got, expected, "{len} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn small_files_are_one_chunk() {
        for len in [0usize, 1, 4096, SINGLE_BLOCK_MAX as usize] {
            let data = pseudo_random(len, 3);
            let c = chunks(&data, 1000);
            assert_eq!(c.len(), 1);
            assert_eq!(c[0], data);
        }
    }

    #[test]
    fn an_edit_changes_few_chunks() {
        let data = pseudo_random(8 * 1024 * 1024, 11);
        let mut edited = data.clone();
        edited[4 * 1024 * 1024] ^= 0xff;
        let a = chunks(&data, 1 << 20);
        let b = chunks(&edited, 1 << 20);
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(shared + 3 >= a.len(), "{shared} of {} shared", a.len());
    }
}
