//! The line feeds of a datagram, found 64 bytes at a time (SSE2 on x86-64), and how far
//! its bytes are all ASCII: the pre-parser frames a head and learns whether it is text in
//! the same pass, instead of one `memchr` call per line and a UTF-8 check afterwards.

/// The line feeds of a datagram in order, found a block of 64 bytes at a time; as blocks
/// are scanned it also records how far every byte is ASCII ([`LineFeeds::ascii_text`]).
/// The last bytes are scanned as the data's last whole block; data shorter than a block is
/// padded with zeros.
#[derive(Debug)]
pub(super) struct LineFeeds<'a> {
    data: &'a [u8],
    /// Where the block scanned last starts.
    block: usize,
    /// The line feeds of that block not yet handed out, one bit per byte.
    pending: u64,
    /// Where the next block starts: everything before it has been scanned.
    next_block: usize,
    /// Where the first block holding a non-ASCII byte starts (`usize::MAX`: none seen).
    non_ascii_block: usize,
}

impl<'a> LineFeeds<'a> {
    /// The line feeds of `data`, from its start.
    pub(super) fn new(data: &'a [u8]) -> LineFeeds<'a> {
        LineFeeds {
            data,
            block: 0,
            pending: 0,
            next_block: 0,
            non_ascii_block: usize::MAX,
        }
    }

    /// `data[..end]` as text, if the blocks scanned so far cover it and show it is all
    /// ASCII (so the caller's UTF-8 check is skipped); None means "not known": check it.
    pub(super) fn ascii_text(&self, end: usize) -> Option<&'a str> {
        let known = self.next_block.min(self.non_ascii_block);
        let head = self.data.get(..end).filter(|_| end <= known)?;
        debug_assert!(head.is_ascii());
        // SAFETY: every byte before `known` was scanned and seen to be ASCII (`scan`),
        // and ASCII is valid UTF-8.
        #[allow(unsafe_code)]
        Some(unsafe { std::str::from_utf8_unchecked(head) })
    }

    /// Scans blocks until one holds a line feed, which become pending; false at the end of
    /// the data.
    #[inline]
    fn scan(&mut self) -> bool {
        let mut start = self.next_block;
        while let Some(rest) = self.data.get(start..).filter(|rest| !rest.is_empty()) {
            let (feeds, ascii) = match (rest.first_chunk::<BLOCK>(), self.data.last_chunk()) {
                (Some(block), _) => block_masks(block),
                // The last bytes: the data's last block, overlapping bytes already scanned
                // (their line feeds shifted out; a non-ASCII byte among them is taken as
                // one in this block, which only means a UTF-8 check later).
                (None, Some(last)) => {
                    let (feeds, ascii) = block_masks(last);
                    (feeds >> (BLOCK - rest.len()), ascii)
                }
                // Data shorter than a block.
                (None, None) => {
                    let mut padded = [0; BLOCK];
                    padded[..rest.len()].copy_from_slice(rest);
                    portable_masks(&padded)
                }
            };
            if !ascii {
                self.non_ascii_block = self.non_ascii_block.min(start);
            }
            let block = start;
            start += rest.len().min(BLOCK);
            if feeds != 0 {
                (self.block, self.pending, self.next_block) = (block, feeds, start);
                return true;
            }
        }
        self.next_block = start;
        false
    }
}

impl Iterator for LineFeeds<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.pending == 0 && !self.scan() {
            return None;
        }
        let at = self.block + self.pending.trailing_zeros() as usize;
        self.pending &= self.pending - 1;
        Some(at)
    }
}

/// The bytes scanned at a time: one bit each in a `u64` mask.
const BLOCK: usize = 64;

/// A block's line feeds (bit i set for a `\n` at byte i) and whether it is all ASCII, byte
/// by byte: for data shorter than a block, and for every block where SSE2 is not there.
fn portable_masks(block: &[u8; BLOCK]) -> (u64, bool) {
    let feeds = block
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .fold(0, |mask, (i, _)| mask | 1 << i);
    (feeds, block.is_ascii())
}

/// [`portable_masks`] with SSE2 (part of x86-64's baseline): per 16 bytes one load, one
/// compare and one mask move, and one mask move of the top bits of all 64.
#[cfg(target_arch = "x86_64")]
fn block_masks(block: &[u8; BLOCK]) -> (u64, bool) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: `block` is 64 readable bytes, read as four 16-byte loads inside it, and
    // `_mm_loadu_si128` has no alignment requirement; SSE2, which these intrinsics need,
    // is enabled on every x86-64 target.
    #[allow(unsafe_code)]
    unsafe {
        let at = |i: usize| _mm_loadu_si128(block.as_ptr().add(16 * i).cast::<__m128i>());
        let lanes = [at(0), at(1), at(2), at(3)];
        let feed = _mm_set1_epi8(b'\n' as i8);
        let mut feeds = 0u64;
        for (i, lane) in lanes.iter().enumerate() {
            let mask = _mm_movemask_epi8(_mm_cmpeq_epi8(*lane, feed)) as u16;
            feeds |= u64::from(mask) << (16 * i);
        }
        // The top bits of all 64 bytes at once: zero when all are ASCII.
        let any = _mm_or_si128(
            _mm_or_si128(lanes[0], lanes[1]),
            _mm_or_si128(lanes[2], lanes[3]),
        );
        (feeds, _mm_movemask_epi8(any) == 0)
    }
}

#[cfg(not(target_arch = "x86_64"))]
use portable_masks as block_masks;

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagram-like bytes of every length up to 200: line feeds, CRs, text, and non-ASCII
    /// bytes at chosen places.
    fn samples() -> Vec<Vec<u8>> {
        let lines =
            b"Via: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\n\n\r\nx\ny\r\n\r\nCall-ID: 1\r\n\r\nv=0\n";
        let text = lines.repeat(3);
        let mut samples = Vec::new();
        for len in 0..=text.len() {
            samples.push(text[..len].to_vec());
            for non_ascii in [0, 7, 15, 16, 17, 31, 33, 47, 60, 63, 64, 65, 127, 128, 150] {
                if non_ascii < len {
                    let mut bytes = text[..len].to_vec();
                    bytes[non_ascii] = 0xc3;
                    samples.push(bytes);
                }
            }
        }
        samples.push(vec![b'\n'; 140]);
        samples.push(vec![0xff; 140]);
        samples
    }

    #[test]
    fn every_line_feed_in_order() {
        for bytes in samples() {
            let found: Vec<usize> = LineFeeds::new(&bytes).collect();
            let want: Vec<usize> = memchr::memchr_iter(b'\n', &bytes).collect();
            assert_eq!(found, want, "{bytes:?}");
        }
    }

    #[test]
    fn ascii_text_only_where_every_byte_scanned_is_ascii() {
        for bytes in samples() {
            let mut feeds = LineFeeds::new(&bytes);
            assert_eq!(feeds.ascii_text(0), Some(""), "nothing to check");
            if !bytes.is_empty() {
                assert_eq!(feeds.ascii_text(1), None, "nothing scanned yet");
            }
            feeds.by_ref().for_each(drop);
            let first_non_ascii = bytes.iter().position(|b| !b.is_ascii());
            // Scanned to the end: known ASCII up to the block holding the first non-ASCII
            // byte, or everything.
            let known = first_non_ascii.map_or(bytes.len(), |at| at / BLOCK * BLOCK);
            for end in 0..=bytes.len() {
                let want = (end <= known).then(|| std::str::from_utf8(&bytes[..end]).unwrap());
                assert_eq!(feeds.ascii_text(end), want, "{bytes:?} up to {end}");
            }
        }
    }

    #[test]
    fn the_simd_block_agrees_with_the_portable_one() {
        for bytes in samples() {
            for block in bytes.windows(BLOCK) {
                let block: &[u8; BLOCK] = block.try_into().unwrap();
                assert_eq!(block_masks(block), portable_masks(block), "{block:?}");
            }
        }
    }
}
