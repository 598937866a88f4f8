//! A small, fast zlib encoder for filtered image data: literals and runs
//! (matches at distance 1, the token choice of zlib's `Z_RLE` strategy) under
//! dynamic Huffman codes, one deflate block per `block_bytes` of input, falling
//! back to stored blocks where Huffman coding would not pay.
//!
//! PNG residuals of stained tissue are close to noise: long-distance matches
//! buy almost nothing (zlib's `Z_RLE` and `Z_HUFFMAN_ONLY` strategies come out
//! *smaller* than its default level 6 on them), so what decides the size is the
//! entropy coding, and what decides the speed is how little else is done. The
//! output is a pure function of the input and `block_bytes`.
//!
//! Why our own and not a library (docs/BENCHMARKS.md, "Own code against
//! libraries", `examples/bench_libs.rs`, 2026-12-06): behind the same PNG writer,
//! on 988 patches of the 85 GlaS training images, this writes 1,669 patches per
//! CPU second; the libraries at the same size write half as many (zlib-rs
//! `Z_RLE` memLevel 9: 852, +0.03% bytes) or are larger and still slower
//! (libdeflate level 1: 780, +2.2%; zlib-rs `Z_HUFFMAN_ONLY`: 1,023, +0.25%).
//! Only libdeflate's near-optimal parsing is smaller (level 12, `high`: −0.17%,
//! 18× slower). `balanced` is `prepare`'s default, so the PNG bytes in the shards
//! are this encoder's output.

/// Base lengths of length codes 257..=285 (RFC 1951 §3.2.5).
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// The order code-length code lengths are sent in.
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
const MIN_RUN: usize = 3;
const MAX_RUN: usize = 258;
/// Literal/length alphabet size (0-255 literals, 256 end of block, 257-285 lengths).
const LITLEN: usize = 286;
const EOB: usize = 256;
/// Distance codes sent.
const DIST_CODES: usize = 2;
const MAX_STORED: usize = 65_535;

/// For a run of `len` (3..=258): its length code (257..=285) and extra-bits value.
const fn length_token(len: usize) -> u32 {
    let mut k = 28;
    while LENGTH_BASE[k] as usize > len {
        k -= 1;
    }
    // A token: the symbol in the low 9 bits, the extra-bits value above.
    (257 + k as u32) | ((len as u32 - LENGTH_BASE[k] as u32) << 9)
}

const RUN_TOKEN: [u32; MAX_RUN + 1] = {
    let mut t = [0u32; MAX_RUN + 1];
    let mut len = MIN_RUN;
    while len <= MAX_RUN {
        t[len] = length_token(len);
        len += 1;
    }
    t
};

/// Reused buffers (tokens of one block).
#[derive(Default)]
pub struct RleDeflater {
    tokens: Vec<u32>,
}

impl RleDeflater {
    /// Appends the zlib stream of `data` to `out`.
    pub fn zlib(&mut self, data: &[u8], block_bytes: usize, out: &mut Vec<u8>) {
        let start = out.len();
        let end = self.zlib_at(data, block_bytes, out, start);
        out.truncate(end);
    }

    /// Writes the zlib stream of `data` into `buf` from `start` and returns
    /// where it ends; `buf` grows as needed (only the growth is zeroed) and
    /// may hold garbage past the end.
    pub fn zlib_at(
        &mut self,
        data: &[u8],
        block_bytes: usize,
        buf: &mut Vec<u8>,
        start: usize,
    ) -> usize {
        let block_bytes = block_bytes.max(1);
        let mut bits = BitWriter {
            buf: std::mem::take(buf),
            pos: start,
            acc: 0,
            n: 0,
        };
        // CMF: deflate, 32 KiB window; FLG: "fast" compression level, check bits.
        bits.bytes(&[0x78, 0x5e]);
        let mut from = 0;
        loop {
            let to = (from + block_bytes).min(data.len());
            self.block(data, from, to, to == data.len(), &mut bits);
            if to == data.len() {
                break;
            }
            from = to;
        }
        bits.align();
        bits.bytes(&zlib_rs::adler32::adler32(1, data).to_be_bytes());
        let end = bits.pos;
        *buf = bits.buf;
        end
    }

    /// One block of `data[start..end]` (earlier bytes are its history).
    fn block(&mut self, data: &[u8], start: usize, end: usize, last: bool, bits: &mut BitWriter) {
        let mut lit_freq = [0u32; LITLEN];
        let n_tokens = tokenize(data, start, end, &mut self.tokens, &mut lit_freq);
        let tokens = &self.tokens[..n_tokens];
        lit_freq[EOB] = 1;

        let mut lit_len = [0u8; LITLEN];
        code_lengths(&lit_freq, 15, &mut lit_len);
        // Distance codes 0 (distance 1) and 1 (unused), one bit each, so the
        // distance code is complete (as zlib makes it).
        let dist_len = [1u8; DIST_CODES];
        let n_lit = 257.max(LITLEN - lit_len.iter().rev().take_while(|&&l| l == 0).count());
        let mut all_len = Vec::with_capacity(n_lit + DIST_CODES);
        all_len.extend_from_slice(&lit_len[..n_lit]);
        all_len.extend_from_slice(&dist_len);
        let cl_tokens = rle_code_lengths(&all_len);
        let mut cl_freq = [0u32; 19];
        for &(sym, _) in &cl_tokens {
            cl_freq[sym as usize] += 1;
        }
        let mut cl_len = [0u8; 19];
        code_lengths(&cl_freq, 7, &mut cl_len);
        let n_cl = 4.max(
            19 - CL_ORDER
                .iter()
                .rev()
                .take_while(|&&s| cl_len[s] == 0)
                .count(),
        );

        // Size of the Huffman block in bits, to compare with storing the bytes.
        let header = 3 + 5 + 5 + 4 + 3 * n_cl as u64;
        let lengths: u64 = cl_tokens
            .iter()
            .map(|&(s, _)| cl_len[s as usize] as u64 + cl_extra_bits(s) as u64)
            .sum();
        let body: u64 = (0..LITLEN)
            .map(|s| lit_freq[s] as u64 * (lit_len[s] as u32 + run_extra_bits(s)) as u64)
            .sum();
        let huffman_bits = header + lengths + body;
        let len = (end - start) as u64;
        let stored_bits = 8 * (len + 5 * len.div_ceil(MAX_STORED as u64).max(1)) + 10;
        if stored_bits < huffman_bits {
            stored(&data[start..end], last, bits);
            return;
        }

        bits.put(last as u32 | (2 << 1), 3);
        bits.put((n_lit - 257) as u32, 5);
        bits.put((DIST_CODES - 1) as u32, 5);
        bits.put((n_cl - 4) as u32, 4);
        for &s in &CL_ORDER[..n_cl] {
            bits.put(cl_len[s] as u32, 3);
        }
        let cl_code = canonical(&cl_len);
        for &(s, extra) in &cl_tokens {
            let s = s as usize;
            bits.put(cl_code[s] as u32, cl_len[s] as u32);
            bits.put(extra as u32, cl_extra_bits(s as u8));
        }
        let lit_code = canonical(&lit_len);
        // Per symbol: its code, the shift of a run's extra bits (the code's
        // length), and the bits in all: code, extra bits, and for a run the
        // distance code (code 0, one bit: a zero, so nothing to add).
        let mut table = [(0u32, 0u32, 0u32); LITLEN];
        for (s, t) in table.iter_mut().enumerate() {
            let l = lit_len[s] as u32;
            *t = (
                lit_code[s] as u32,
                l,
                l + run_extra_bits(s) + (s > EOB) as u32,
            );
        }
        put_tokens(tokens, &table, bits);
        bits.put(lit_code[EOB] as u32, lit_len[EOB] as u32);
    }
}

/// Writes `tokens` with `table` (per symbol: code, shift of the extra bits, bits in all).
fn put_tokens(tokens: &[u32], table: &[(u32, u32, u32); LITLEN], w: &mut BitWriter) {
    // At most 15 + 5 + 1 bits a token, and 8 bytes for the last store.
    w.reserve(tokens.len() * 3 + 16);
    w.flush_bytes();
    let (mut acc, mut n, mut pos) = (w.acc, w.n, w.pos);
    let buf = &mut w.buf[..];
    let bits = |t: u32| {
        let (code, shift, total) = table[(t & 0x1ff) as usize];
        ((code | ((t >> 9) << shift)) as u64, total)
    };
    // Two tokens at a time (≤ 42 bits, on top of < 8 pending), joined before
    // they meet the accumulator: half the serial dependency chain.
    let mut pairs = tokens.chunks_exact(2);
    for p in &mut pairs {
        let ((v0, n0), (v1, n1)) = (bits(p[0]), bits(p[1]));
        acc |= (v0 | (v1 << n0)) << n;
        n += n0 + n1;
        // Branch-free: store all 8 bytes, keep the whole ones.
        buf[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
        let whole = n >> 3;
        pos += whole as usize;
        acc >>= whole * 8;
        n &= 7;
    }
    for &t in pairs.remainder() {
        let (v, len) = bits(t);
        acc |= v << n;
        n += len;
        buf[pos..pos + 8].copy_from_slice(&acc.to_le_bytes());
        let whole = n >> 3;
        pos += whole as usize;
        acc >>= whole * 8;
        n &= 7;
    }
    (w.acc, w.n, w.pos) = (acc, n, pos);
}

/// Extra bits after a literal/length symbol (those of a run's length).
fn run_extra_bits(sym: usize) -> u32 {
    if sym > EOB {
        LENGTH_EXTRA[sym - 257] as u32
    } else {
        0
    }
}

/// Extra bits after a code-length symbol.
fn cl_extra_bits(sym: u8) -> u32 {
    match sym {
        16 => 2,
        17 => 3,
        18 => 7,
        _ => 0,
    }
}

/// Stored blocks holding `bytes`; the last one final when `last`.
fn stored(bytes: &[u8], last: bool, bits: &mut BitWriter) {
    let parts = bytes.len().div_ceil(MAX_STORED).max(1);
    for k in 0..parts {
        let part = &bytes[k * MAX_STORED..((k + 1) * MAX_STORED).min(bytes.len())];
        bits.put((last && k + 1 == parts) as u32, 3);
        bits.align();
        let len = part.len() as u16;
        bits.bytes(&len.to_le_bytes());
        bits.bytes(&(!len).to_le_bytes());
        bits.bytes(part);
    }
}

/// Tokens of `data[start..end]`, counted into `freq`: a run where the byte
/// before repeats at least three times (a distance-1 match), else a literal.
/// Returns the number of tokens, written to the start of `tokens` (grown as needed).
fn tokenize(
    data: &[u8],
    start: usize,
    end: usize,
    tokens: &mut Vec<u32>,
    freq: &mut [u32; LITLEN],
) -> usize {
    if tokens.len() < end - start {
        tokens.resize(end - start, 0);
    }
    // Literals are counted as all bytes of the block, four tables interleaved
    // so that repeated symbols do not chain their increments through memory;
    // the bytes that runs cover are taken off again below (runs are rare).
    let mut hist = [[0u32; 256]; 4];
    let mut quads = data[start..end].chunks_exact(4);
    for q in &mut quads {
        hist[0][q[0] as usize] += 1;
        hist[1][q[1] as usize] += 1;
        hist[2][q[2] as usize] += 1;
        hist[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        hist[0][b as usize] += 1;
    }
    for (b, f) in freq.iter_mut().take(256).enumerate() {
        *f += hist[0][b] + hist[1][b] + hist[2][b] + hist[3][b];
    }
    let mut k = 0;
    let mut i = start;
    if i == 0 && end > 0 {
        // The first byte of the stream has no history.
        tokens[0] = data[0] as u32;
        k = 1;
        i = 1;
    }
    while i < end {
        let b = data[i];
        // data[i - 1..i + 3] all equal to b: a run of at least 3.
        tokens[k] = if i + MIN_RUN <= end
            && u32::from_le_bytes(data[i - 1..i + 3].try_into().expect("4 bytes"))
                == u32::from(b) * 0x0101_0101
        {
            let max = (end - i).min(MAX_RUN);
            let mut len = MIN_RUN;
            while len < max && data[i + len] == b {
                len += 1;
            }
            i += len;
            freq[b as usize] -= len as u32;
            let t = RUN_TOKEN[len];
            freq[(t & 0x1ff) as usize] += 1;
            t
        } else {
            i += 1;
            b as u32
        };
        k += 1;
    }
    k
}

/// Code lengths as code-length-alphabet tokens (symbol, extra-bits value):
/// 16 repeats the previous length 3-6 times, 17 and 18 give 3-10 and 11-138 zeros.
fn rle_code_lengths(lens: &[u8]) -> Vec<(u8, u8)> {
    let mut out = Vec::with_capacity(lens.len());
    let mut i = 0;
    while i < lens.len() {
        let l = lens[i];
        let run = lens[i..].iter().take_while(|&&x| x == l).count();
        let mut r = run;
        if l == 0 {
            while r >= 11 {
                let k = r.min(138);
                out.push((18, (k - 11) as u8));
                r -= k;
            }
            if r >= 3 {
                out.push((17, (r - 3) as u8));
                r = 0;
            }
            out.extend(std::iter::repeat_n((0, 0), r));
        } else {
            out.push((l, 0));
            r -= 1;
            while r >= 3 {
                let k = r.min(6);
                out.push((16, (k - 3) as u8));
                r -= k;
            }
            out.extend(std::iter::repeat_n((l, 0), r));
        }
        i += run;
    }
    out
}

/// Length-limited Huffman code lengths for `freq` into `lens` (0 for unused
/// symbols). At least two symbols get a code, so the code is complete.
/// Deterministic: ties in frequency are broken by symbol.
fn code_lengths(freq: &[u32], limit: usize, lens: &mut [u8]) {
    lens.fill(0);
    let mut syms: Vec<(u32, u16)> = freq
        .iter()
        .enumerate()
        .filter(|&(_, &f)| f > 0)
        .map(|(s, &f)| (f, s as u16))
        .collect();
    let mut k = 0;
    while syms.len() < 2 {
        if freq[k] == 0 {
            syms.push((1, k as u16));
        }
        k += 1;
    }
    syms.sort_unstable();
    let mut a: Vec<u32> = syms.iter().map(|s| s.0).collect();
    minimum_redundancy(&mut a);
    // Number of codes of each length, lengths beyond `limit` folded into it,
    // then the Kraft sum restored (miniz's tdefl_huffman_enforce_max_code_size).
    let mut count = vec![0u32; limit.max(a.len()) + 1];
    for &l in &a {
        count[(l as usize).min(limit)] += 1;
    }
    let mut total: u64 = (1..=limit).map(|i| (count[i] as u64) << (limit - i)).sum();
    while total != 1u64 << limit {
        count[limit] -= 1;
        for i in (1..limit).rev() {
            if count[i] > 0 {
                count[i] -= 1;
                count[i + 1] += 2;
                break;
            }
        }
        total -= 1;
    }
    // Shortest codes to the most frequent symbols (the end of `syms`).
    let mut j = syms.len();
    for (len, &c) in count.iter().enumerate().take(limit + 1).skip(1) {
        for _ in 0..c {
            j -= 1;
            lens[syms[j].1 as usize] = len as u8;
        }
    }
}

/// Huffman code lengths of `a` (frequencies sorted ascending, at least two),
/// in place: Moffat and Katajainen's algorithm, as in miniz.
fn minimum_redundancy(a: &mut [u32]) {
    let n = a.len();
    a[0] += a[1];
    let (mut root, mut leaf) = (0usize, 2usize);
    for next in 1..n - 1 {
        if leaf >= n || a[root] < a[leaf] {
            a[next] = a[root];
            a[root] = next as u32;
            root += 1;
        } else {
            a[next] = a[leaf];
            leaf += 1;
        }
        if leaf >= n || (root < next && a[root] < a[leaf]) {
            a[next] += a[root];
            a[root] = next as u32;
            root += 1;
        } else {
            a[next] += a[leaf];
            leaf += 1;
        }
    }
    a[n - 2] = 0;
    for next in (0..n.saturating_sub(2)).rev() {
        a[next] = a[a[next] as usize] + 1;
    }
    let (mut avbl, mut used, mut depth) = (1usize, 0usize, 0u32);
    let mut root = n as isize - 2;
    let mut next = n as isize - 1;
    while avbl > 0 {
        while root >= 0 && a[root as usize] == depth {
            used += 1;
            root -= 1;
        }
        while avbl > used {
            a[next as usize] = depth;
            next -= 1;
            avbl -= 1;
        }
        avbl = 2 * used;
        depth += 1;
        used = 0;
    }
}

/// Canonical codes for `lens`, bit-reversed for deflate's LSB-first packing.
fn canonical(lens: &[u8]) -> Vec<u16> {
    let mut count = [0u16; 16];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for b in 1..16 {
        code = (code + count[b - 1]) << 1;
        next[b] = code;
    }
    lens.iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[l as usize];
            next[l as usize] += 1;
            c.reverse_bits() >> (16 - l)
        })
        .collect()
}

/// Bits into bytes, least significant first, into `buf` from `pos` (`buf`
/// is kept longer than what is written).
struct BitWriter {
    buf: Vec<u8>,
    pos: usize,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Room for `bytes` more bytes (and the 4 of a pending flush).
    fn reserve(&mut self, bytes: usize) {
        let want = self.pos + bytes + 8;
        if self.buf.len() < want {
            self.buf.resize(want.max(2 * self.buf.len()), 0);
        }
    }

    /// Appends the low `len` (≤ 32) bits of `v`.
    fn put(&mut self, v: u32, len: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.reserve(4);
            self.buf[self.pos..self.pos + 4].copy_from_slice(&(self.acc as u32).to_le_bytes());
            self.pos += 4;
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Writes out the whole bytes pending (fewer than 8 bits stay in `acc`).
    fn flush_bytes(&mut self) {
        while self.n >= 8 {
            self.bytes(&[self.acc as u8]);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Pads with zero bits to a byte boundary and writes out what is pending.
    fn align(&mut self) {
        while self.n > 0 {
            self.bytes(&[self.acc as u8]);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.acc = 0;
    }

    /// Appends whole bytes (only at a byte boundary, after `align`).
    fn bytes(&mut self, b: &[u8]) {
        self.reserve(b.len());
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn zlib(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = Vec::new();
        RleDeflater::default().zlib(data, block, &mut out);
        out
    }

    /// Decodes with three inflaters: zlib-rs, libdeflate (strict about
    /// malformed codes) and flate2's (whichever backend it is built with).
    fn check(data: &[u8], block: usize) -> usize {
        let z = zlib(data, block);
        let mut back = vec![0u8; data.len() + 1];
        let (got, rc) = zlib_rs::decompress_slice(&mut back, &z, zlib_rs::InflateConfig::default());
        assert_eq!(rc, zlib_rs::ReturnCode::Ok, "zlib-rs: {rc:?}");
        assert_eq!(got, data, "zlib-rs round trip, block {block}");
        let mut back = vec![0u8; data.len()];
        let n = libdeflater::Decompressor::new()
            .zlib_decompress(&z, &mut back)
            .expect("libdeflate");
        assert_eq!(&back[..n], data, "libdeflate round trip, block {block}");
        let mut dec = flate2::read::ZlibDecoder::new(&z[..]);
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut dec, &mut v).expect("flate2");
        assert_eq!(v, data, "flate2 round trip");
        z.len()
    }

    fn residual_like(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                // Small signed values around 0, with runs of zeros now and then.
                let v: i32 = rng.random_range(-12..=12) * rng.random_range(0..=1);
                v as u8
            })
            .collect()
    }

    #[test]
    fn round_trips() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let noise: Vec<u8> = (0..100_000).map(|_| rng.random()).collect();
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![7],
            vec![0, 0],
            vec![5, 5, 5, 5, 5],
            vec![0; 1000],
            vec![9; 70_000],
            (0..=255u8).cycle().take(5000).collect(),
            residual_like(150_000, 2),
            noise,
        ];
        for data in &cases {
            for block in [1, 3, 1000, 32_768, 65_535, 65_536, 1 << 20] {
                check(data, block);
            }
        }
    }

    #[test]
    fn runs_at_block_edges_and_every_length() {
        let mut data = Vec::new();
        for len in 1..=600 {
            data.extend(std::iter::repeat_n((len % 7) as u8, len));
            data.push(200);
        }
        for block in [4, 255, 258, 259, 4096] {
            check(&data, block);
        }
    }

    #[test]
    fn compresses_what_it_should_and_stores_noise() {
        let n = check(&vec![3u8; 150_000], 1 << 20);
        assert!(n < 1500, "{n}");
        let r = residual_like(150_000, 3);
        let n = check(&r, 32_768);
        assert!(n < 150_000 * 6 / 10, "{n}");
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let noise: Vec<u8> = (0..150_000).map(|_| rng.random()).collect();
        let n = check(&noise, 32_768);
        // Stored: 5 bytes a block of ≤ 64 KiB on top of the data, plus zlib framing.
        assert!(n <= 150_000 + 5 * 6 + 6, "{n}");
    }

    #[test]
    fn code_lengths_are_complete_and_limited() {
        // Fibonacci frequencies force a deep tree: the limit must fold it.
        let mut freq = vec![0u32; 40];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freq.iter_mut() {
            *f = a;
            (a, b) = (b, a.saturating_add(b));
        }
        for limit in [7, 15] {
            let mut lens = vec![0u8; 40];
            code_lengths(&freq, limit, &mut lens);
            assert!(lens.iter().all(|&l| l >= 1 && l as usize <= limit));
            let kraft: f64 = lens.iter().map(|&l| 0.5f64.powi(l as i32)).sum();
            assert!((kraft - 1.0).abs() < 1e-12, "{kraft}");
        }
        // One used symbol still gets a complete two-code tree.
        let mut lens = [0u8; 5];
        code_lengths(&[0, 0, 9, 0, 0], 15, &mut lens);
        assert_eq!(lens, [1, 0, 1, 0, 0]);
        code_lengths(&[4, 0, 0], 15, &mut lens[..3]);
        assert_eq!(&lens[..3], [1, 1, 0]);
    }

    #[test]
    fn canonical_codes_match_rfc1951_example() {
        // RFC 1951 §3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) give codes
        // 010 011 100 101 110 00 1110 1111 (here bit-reversed).
        let codes = canonical(&[3, 3, 3, 3, 3, 2, 4, 4]);
        let want = [0b010u16, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111];
        let lens = [3, 3, 3, 3, 3, 2, 4, 4];
        for ((&c, &w), &l) in codes.iter().zip(&want).zip(&lens) {
            assert_eq!(c, w.reverse_bits() >> (16 - l));
        }
    }

    #[test]
    fn deterministic() {
        let r = residual_like(150_000, 5);
        assert_eq!(zlib(&r, 32_768), zlib(&r, 32_768));
        let mut d = RleDeflater::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.zlib(&r, 32_768, &mut a);
        d.zlib(&r[..1000], 32_768, &mut Vec::new());
        d.zlib(&r, 32_768, &mut b);
        assert_eq!(a, b);
    }
}
