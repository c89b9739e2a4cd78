//! Content-defined chunking with FastCDC 2020 (the `fastcdc` crate's cut function and gear
//! tables), over a reusable buffer of twice the maximum chunk size. The crate's `StreamCDC`
//! shifts its whole buffer after every chunk; this one moves the unconsumed tail only when the
//! buffer runs low, and hands out borrowed slices, so a worker's memory is fixed at `2 × max`.
//! The cut points are exactly those of `fastcdc::v2020::FastCDC` with the same parameters.

use std::borrow::Cow;
use std::io::{ErrorKind, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

use crate::repository::config::ChunkerParams;

/// A chunker bound to one repository's parameters. Not shared between threads; make one each.
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    buf: Vec<u8>,
}

impl Chunker {
    /// Builds a chunker; `params` must have passed `ChunkerParams::validate`.
    pub fn new(params: &ChunkerParams) -> Self {
        let level = match params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, level);
        let (gear, gear_ls) = get_gear_with_seed(params.seed);
        Chunker {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s,
            mask_l,
            gear,
            gear_ls,
            buf: Vec::new(),
        }
    }

    /// Splits everything `source` yields into chunks, calling `each` with every chunk in order.
    /// Returns the number of bytes read. An error from `each` stops the run and is returned as is.
    pub fn chunk<R: Read, E: From<std::io::Error>>(
        &mut self,
        mut source: R,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        if self.buf.len() < 2 * self.max {
            self.buf = vec![0u8; 2 * self.max];
        }
        let mut start = 0usize; // first unconsumed byte
        let mut end = 0usize; // one past the last valid byte
        let mut eof = false;
        let mut total = 0u64;
        loop {
            if !eof && end - start < self.max {
                self.buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < self.buf.len() {
                    match source.read(&mut self.buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            let (_, len) = cut_gear(
                &self.buf[start..end],
                self.min,
                self.avg,
                self.max,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
                &self.gear,
                &self.gear_ls,
            );
            each(&self.buf[start..start + len])?;
            start += len;
            total += len as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::config::ChunkerParams;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
            ..ChunkerParams::default_with_seed(0x1234)
        }
    }

    fn data(n: usize) -> Vec<u8> {
        let mut x: u64 = 88172645463325252;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn lengths(p: &ChunkerParams, d: &[u8], read_size: usize) -> Vec<usize> {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(b.len()).min(self.1);
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = vec![];
        Chunker::new(p)
            .chunk::<_, std::io::Error>(Trickle(d, read_size), |c| {
                out.push(c.len());
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn matches_the_crate_reference_and_is_independent_of_read_sizes() {
        let p = params();
        let d = data(1 << 20);
        let reference: Vec<usize> = fastcdc::v2020::FastCDC::with_level_and_seed(
            &d,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            Normalization::Level1,
            p.seed,
        )
        .map(|c| c.length)
        .collect();
        assert!(reference.len() > 20);
        assert_eq!(lengths(&p, &d, usize::MAX), reference);
        assert_eq!(lengths(&p, &d, 777), reference);
        assert_eq!(reference.iter().sum::<usize>(), d.len());
        assert!(reference.iter().all(|&l| l <= p.max_size as usize));
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let p = params();
        let d = data(1 << 20);
        let mut e = d.clone();
        e.insert(500_000, 42);
        let (a, b) = (lengths(&p, &d, usize::MAX), lengths(&p, &e, usize::MAX));
        let common_tail = a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(common_tail > a.len() / 3, "resynchronised after the edit");
    }

    #[test]
    fn empty_input_gives_no_chunks() {
        assert!(lengths(&params(), &[], 10).is_empty());
    }
}
