//! A minimal PNG writer for 8-bit RGB images whose zlib stream comes from a
//! deflater of our choosing ([`Deflater`]): the run-length deflater of
//! [`rle_deflate`](super::rle_deflate), libdeflate (through the `libdeflater`
//! crate), or zlib-rs with an explicit strategy and memory level. The `png`
//! crate takes none of them.
//!
//! The file is: the signature, IHDR (8-bit RGB, no interlace), the zlib
//! stream of the filtered scanlines in IDAT chunks (one unless it is larger
//! than [`MAX_IDAT`]), IEND; each chunk carries its CRC-32. Scanlines are
//! filtered per row with the filter whose output has the smallest sum of
//! absolute (signed-byte) values, libpng's and PIL's heuristic, ties going to
//! the earlier filter in the order None, Sub, Up, Average, Paeth. The output
//! is a pure function of the pixels, the level and the filter choice.

use std::cell::RefCell;

use libdeflater::{CompressionLvl, Compressor};

use super::rle_deflate::RleDeflater;

/// The five PNG filter types (PNG spec §9.2), in the order their codes give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterType {
    None = 0,
    Sub = 1,
    Up = 2,
    Average = 3,
    Paeth = 4,
}

/// How each scanline's filter is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Per row, the filter with the minimum sum of absolute differences
    /// (libpng's heuristic), trying None, Sub, Up, Average, Paeth.
    Adaptive,
    /// The same without Average, trying None, Up, Sub, Paeth: PIL's choice
    /// unless `optimize` is set.
    AdaptiveNoAverage,
    /// The same filter on every row.
    Fixed(FilterType),
}

/// zlib's deflate strategies (zlib.h), as far as they matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZlibStrategy {
    Default,
    /// Matches shorter than 6 bytes are coded as literals.
    Filtered,
    /// Literals only.
    HuffmanOnly,
    /// Literals and runs (matches at distance 1 only).
    Rle,
}

/// What writes the zlib stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deflater {
    /// [`rle_deflate`](super::rle_deflate): literals and distance-1 runs under
    /// dynamic Huffman codes, one block per `block_bytes` of filtered data.
    Rle { block_bytes: usize },
    /// libdeflate at `level` (0-12).
    Libdeflate { level: i32 },
    /// zlib-rs at `level` (0-9) with `strategy` and `mem_level` (1-9; it sets
    /// the symbol buffer, so the Huffman block length: 2^(mem_level + 6) symbols).
    Zlib {
        level: i32,
        strategy: ZlibStrategy,
        mem_level: i32,
    },
}

/// The largest IDAT chunk written; a longer zlib stream is split.
pub const MAX_IDAT: usize = 1 << 30;

/// Bytes per pixel (8-bit RGB).
const BPP: usize = 3;

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

thread_local! {
    /// Per thread: the deflater last used (both allocate their match-finder
    /// state, up to a few hundred KiB, at creation), and scratch buffers for
    /// the filtered image and its zlib stream.
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { engine: None, filtered: Vec::new(), zlib: Vec::new() })
    };
}

struct Scratch {
    engine: Option<(Deflater, Engine)>,
    filtered: Vec<u8>,
    zlib: Vec<u8>,
}

enum Engine {
    Rle(RleDeflater, usize),
    Libdeflate(Compressor),
    Zlib(zlib_rs::Deflate),
}

impl Engine {
    fn new(d: Deflater) -> Result<Self, String> {
        Ok(match d {
            Deflater::Rle { block_bytes } => Engine::Rle(RleDeflater::default(), block_bytes),
            Deflater::Libdeflate { level } => Engine::Libdeflate(Compressor::new(
                CompressionLvl::new(level).map_err(|_| format!("bad libdeflate level {level}"))?,
            )),
            Deflater::Zlib {
                level,
                strategy,
                mem_level,
            } => {
                if !(0..=9).contains(&level) || !(1..=9).contains(&mem_level) {
                    return Err(format!("bad zlib level {level} / memory level {mem_level}"));
                }
                Engine::Zlib(zlib_rs::Deflate::new_with_config(zlib_rs::DeflateConfig {
                    level,
                    method: zlib_rs::Method::Deflated,
                    window_bits: 15,
                    mem_level,
                    strategy: match strategy {
                        ZlibStrategy::Default => zlib_rs::Strategy::Default,
                        ZlibStrategy::Filtered => zlib_rs::Strategy::Filtered,
                        ZlibStrategy::HuffmanOnly => zlib_rs::Strategy::HuffmanOnly,
                        ZlibStrategy::Rle => zlib_rs::Strategy::Rle,
                    },
                }))
            }
        })
    }

    /// Writes the zlib stream of `input` at the start of `out` and returns its
    /// length. `out` is a scratch buffer: grown as needed (only what is new
    /// gets zeroed), never shrunk; bytes past the stream are garbage.
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let grow = |out: &mut Vec<u8>, len: usize| {
            if out.len() < len {
                out.resize(len, 0);
            }
        };
        Ok(match self {
            Engine::Rle(r, block_bytes) => r.zlib_at(input, *block_bytes, out, 0),
            Engine::Libdeflate(c) => {
                grow(out, c.zlib_compress_bound(input.len()));
                c.zlib_compress(input, out)
                    .map_err(|e| format!("deflate failed: {e}"))?
            }
            Engine::Zlib(z) => {
                z.reset();
                grow(out, zlib_rs::compress_bound(input.len()));
                loop {
                    let (i, o) = (z.total_in() as usize, z.total_out() as usize);
                    if o == out.len() {
                        grow(out, 2 * o);
                    }
                    let status = z
                        .compress(&input[i..], &mut out[o..], zlib_rs::DeflateFlush::Finish)
                        .map_err(|e| format!("deflate failed: {}", e.as_str()))?;
                    if status == zlib_rs::Status::StreamEnd {
                        break;
                    }
                }
                z.total_out() as usize
            }
        })
    }
}

/// Encodes an 8-bit RGB image (`pixels`: rows top to bottom, `width × 3`
/// bytes each) as a PNG whose zlib stream `deflater` writes.
pub fn encode_rgb8(
    width: u32,
    height: u32,
    pixels: &[u8],
    deflater: Deflater,
    filter: Filter,
) -> Result<Vec<u8>, String> {
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(format!("cannot write a {width}×{height} PNG"));
    }
    let row = (width as usize)
        .checked_mul(BPP)
        .ok_or("PNG row too long")?;
    let expected = row
        .checked_mul(height as usize)
        .ok_or("PNG image too large")?;
    if pixels.len() != expected {
        return Err(format!(
            "{} bytes of pixels for a {width}×{height} RGB image (want {expected})",
            pixels.len()
        ));
    }
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        if !matches!(&s.engine, Some((d, _)) if *d == deflater) {
            s.engine = Some((deflater, Engine::new(deflater)?));
        }
        let Some((_, engine)) = s.engine.as_mut() else {
            unreachable!("set above")
        };
        filter_image(pixels, row, filter, &mut s.filtered);
        let n = engine.compress(&s.filtered, &mut s.zlib)?;
        let zlib = &s.zlib[..n];

        let chunks = zlib.len().div_ceil(MAX_IDAT).max(1);
        let mut out = Vec::with_capacity(SIGNATURE.len() + 25 + zlib.len() + 12 * chunks + 12);
        out.extend_from_slice(&SIGNATURE);
        let mut ihdr = [0u8; 13];
        ihdr[..4].copy_from_slice(&width.to_be_bytes());
        ihdr[4..8].copy_from_slice(&height.to_be_bytes());
        // bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
        ihdr[8..].copy_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        for part in zlib.chunks(MAX_IDAT) {
            chunk(&mut out, b"IDAT", part);
        }
        chunk(&mut out, b"IEND", &[]);
        Ok(out)
    })
}

/// Appends one chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// Filters every scanline of `pixels` (rows of `row` bytes) into `out`: per
/// row, the filter-type byte, then the filtered bytes.
fn filter_image(pixels: &[u8], row: usize, filter: Filter, out: &mut Vec<u8>) {
    let height = pixels.len() / row;
    // Every byte is written below: no need to zero what is reused.
    out.truncate(height * (row + 1));
    out.resize(height * (row + 1), 0);
    let zeros = vec![0u8; row];
    // Candidates for the adaptive choice (None needs none: it is the row itself).
    let mut cand = [
        vec![0u8; row],
        vec![0u8; row],
        vec![0u8; row],
        vec![0u8; row],
    ];
    for (y, dst) in out.chunks_exact_mut(row + 1).enumerate() {
        let cur = &pixels[y * row..(y + 1) * row];
        let prev = if y == 0 {
            &zeros[..]
        } else {
            &pixels[(y - 1) * row..y * row]
        };
        let (kind, body) = dst.split_at_mut(1);
        kind[0] = match filter {
            Filter::Fixed(t) => {
                apply(t, cur, prev, body);
                t as u8
            }
            Filter::Adaptive | Filter::AdaptiveNoAverage => {
                let order: &[FilterType] = if filter == Filter::Adaptive {
                    &[
                        FilterType::Sub,
                        FilterType::Up,
                        FilterType::Average,
                        FilterType::Paeth,
                    ]
                } else {
                    &[FilterType::Up, FilterType::Sub, FilterType::Paeth]
                };
                let mut best = (sad(cur), FilterType::None);
                for &t in order {
                    let buf = &mut cand[t as usize - 1];
                    apply(t, cur, prev, buf);
                    let s = sad(buf);
                    if s < best.0 {
                        best = (s, t);
                    }
                }
                match best.1 {
                    FilterType::None => body.copy_from_slice(cur),
                    t => body.copy_from_slice(&cand[t as usize - 1]),
                }
                best.1 as u8
            }
        };
    }
}

/// Sum of the bytes read as signed, in absolute value.
fn sad(v: &[u8]) -> u64 {
    // Chunks keep the inner sums in u32 (vectorisable) without overflow.
    v.chunks(1 << 16)
        .map(|c| {
            c.iter()
                .map(|&b| (b as i8).unsigned_abs() as u32)
                .sum::<u32>() as u64
        })
        .sum()
}

/// Writes `cur` filtered with `t` against `prev` (the row above, zeros for the first).
fn apply(t: FilterType, cur: &[u8], prev: &[u8], out: &mut [u8]) {
    let n = cur.len();
    let head = BPP.min(n);
    match t {
        FilterType::None => out.copy_from_slice(cur),
        FilterType::Sub => {
            out[..head].copy_from_slice(&cur[..head]);
            for ((o, &c), &a) in out[head..]
                .iter_mut()
                .zip(&cur[head..])
                .zip(&cur[..n - head])
            {
                *o = c.wrapping_sub(a);
            }
        }
        FilterType::Up => {
            for ((o, &c), &b) in out.iter_mut().zip(cur).zip(prev) {
                *o = c.wrapping_sub(b);
            }
        }
        FilterType::Average => {
            for ((o, &c), &b) in out[..head].iter_mut().zip(cur).zip(prev) {
                *o = c.wrapping_sub(b >> 1);
            }
            for (((o, &c), &a), &b) in out[head..]
                .iter_mut()
                .zip(&cur[head..])
                .zip(&cur[..n - head])
                .zip(&prev[head..])
            {
                *o = c.wrapping_sub(((a as u16 + b as u16) >> 1) as u8);
            }
        }
        FilterType::Paeth => {
            // With a = c = 0 for the first pixel, Paeth predicts b (the byte above).
            for ((o, &c), &b) in out[..head].iter_mut().zip(cur).zip(prev) {
                *o = c.wrapping_sub(b);
            }
            for ((((o, &x), &a), &b), &c) in out[head..]
                .iter_mut()
                .zip(&cur[head..])
                .zip(&cur[..n - head])
                .zip(&prev[head..])
                .zip(&prev[..n - head])
            {
                *o = x.wrapping_sub(paeth(a, b, c));
            }
        }
    }
}

/// The Paeth predictor of PNG spec §9.4, branch-free.
#[inline(always)]
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (a16, b16, c16) = (a as i16, b as i16, c as i16);
    let pa = (b16 - c16).abs();
    let pb = (a16 - c16).abs();
    let pc = (a16 + b16 - 2 * c16).abs();
    let ab = if pb < pa { b } else { a };
    let pab = pa.min(pb);
    if pc < pab { c } else { ab }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const LD6: Deflater = Deflater::Libdeflate { level: 6 };

    /// The textbook Paeth predictor (PNG spec §9.4).
    fn paeth_ref(a: u8, b: u8, c: u8) -> u8 {
        let p = a as i32 + b as i32 - c as i32;
        let (pa, pb, pc) = (
            (p - a as i32).abs(),
            (p - b as i32).abs(),
            (p - c as i32).abs(),
        );
        if pa <= pb && pa <= pc {
            a
        } else if pb <= pc {
            b
        } else {
            c
        }
    }

    #[test]
    fn paeth_matches_the_spec_everywhere() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in (0..=255u8).step_by(3) {
                    assert_eq!(paeth(a, b, c), paeth_ref(a, b, c), "{a} {b} {c}");
                }
            }
        }
    }

    fn noisy(w: u32, h: u32, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..w * h * 3).map(|_| rng.random()).collect()
    }

    /// Decodes with the `png` crate, which checks every chunk's CRC and the
    /// zlib stream's Adler-32.
    fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
        dec.ignore_checksums(false);
        let mut reader = dec.read_info().expect("header");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        reader.finish().expect("IEND");
        (info.width, info.height, buf)
    }

    fn deflaters() -> Vec<Deflater> {
        let mut v: Vec<Deflater> = [0, 1, 6, 12]
            .map(|level| Deflater::Libdeflate { level })
            .into();
        for block_bytes in [1, 1000, 32_768, 1 << 20] {
            v.push(Deflater::Rle { block_bytes });
        }
        for (level, strategy, mem_level) in [
            (6, ZlibStrategy::Rle, 9),
            (6, ZlibStrategy::Rle, 1),
            (1, ZlibStrategy::Default, 8),
            (9, ZlibStrategy::Default, 9),
            (4, ZlibStrategy::Filtered, 8),
            (6, ZlibStrategy::HuffmanOnly, 8),
            (0, ZlibStrategy::Default, 8),
        ] {
            v.push(Deflater::Zlib {
                level,
                strategy,
                mem_level,
            });
        }
        v
    }

    fn round_trip(w: u32, h: u32, pixels: &[u8]) {
        for filter in [
            Filter::Adaptive,
            Filter::AdaptiveNoAverage,
            Filter::Fixed(FilterType::None),
            Filter::Fixed(FilterType::Sub),
            Filter::Fixed(FilterType::Up),
            Filter::Fixed(FilterType::Average),
            Filter::Fixed(FilterType::Paeth),
        ] {
            for deflater in deflaters() {
                let bytes = encode_rgb8(w, h, pixels, deflater, filter).unwrap();
                assert_eq!(
                    decode_png(&bytes),
                    (w, h, pixels.to_vec()),
                    "{w}×{h} {filter:?} {deflater:?}"
                );
                let img = image::load_from_memory(&bytes).unwrap().into_rgb8();
                assert_eq!(img.dimensions(), (w, h));
                assert_eq!(img.as_raw(), pixels);
            }
        }
    }

    #[test]
    fn one_by_one() {
        round_trip(1, 1, &[200, 3, 129]);
        round_trip(1, 5, &noisy(1, 5, 1));
        round_trip(2, 1, &noisy(2, 1, 2));
    }

    #[test]
    fn patch_sized_noise_and_flat() {
        round_trip(224, 224, &noisy(224, 224, 3));
        round_trip(224, 224, &vec![217u8; 224 * 224 * 3]);
        let grad: Vec<u8> = (0..224 * 224 * 3)
            .map(|i| ((i % 672) / 3 + (i / 672) + (i % 3) * 40) as u8)
            .collect();
        round_trip(224, 224, &grad);
        round_trip(37, 13, &noisy(37, 13, 4));
    }

    #[test]
    fn chunks_are_well_formed() {
        let bytes = encode_rgb8(224, 224, &noisy(224, 224, 5), LD6, Filter::Adaptive).unwrap();
        assert_eq!(&bytes[..8], &SIGNATURE);
        let mut at = 8;
        let mut kinds = Vec::new();
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let body = &bytes[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc, crc32fast::hash(body));
            kinds.push(String::from_utf8(body[..4].to_vec()).unwrap());
            at += 12 + len;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
    }

    #[test]
    fn adaptive_picks_the_cheapest_filter_per_row() {
        // A flat image: on row 0, Sub and Paeth tie (only the first pixel is
        // left) and the earlier, Sub, wins; below it Up is all zeros.
        let flat = vec![90u8; 8 * 4 * 3];
        let mut out = Vec::new();
        filter_image(&flat, 8 * 3, Filter::Adaptive, &mut out);
        let kinds: Vec<u8> = out.chunks(8 * 3 + 1).map(|r| r[0]).collect();
        assert_eq!(kinds, [1, 2, 2, 2]);
        assert!(
            out.chunks(25)
                .skip(1)
                .all(|r| r[1..].iter().all(|&b| b == 0))
        );
        // A horizontal gradient repeated down the image: Up is exact from row 1.
        let grad: Vec<u8> = (0..6)
            .flat_map(|_| (0..24).map(|i| (i * 37 % 251) as u8))
            .collect();
        filter_image(&grad, 24, Filter::Adaptive, &mut out);
        let kinds: Vec<u8> = out.chunks(25).map(|r| r[0]).collect();
        assert_eq!(kinds[1..], [FilterType::Up as u8; 5]);
    }

    #[test]
    fn deterministic_across_threads() {
        let img = noisy(224, 224, 6);
        for d in deflaters() {
            let want = encode_rgb8(224, 224, &img, d, Filter::Adaptive).unwrap();
            let got: Vec<Vec<u8>> = std::thread::scope(|s| {
                let hs: Vec<_> = deflaters()
                    .into_iter()
                    .map(|other| {
                        let img = &img;
                        s.spawn(move || {
                            // Another deflater first, so the per-thread state is rebuilt,
                            // then this one twice, so it is reused.
                            let _ = encode_rgb8(224, 224, img, other, Filter::Adaptive).unwrap();
                            let a = encode_rgb8(224, 224, img, d, Filter::Adaptive).unwrap();
                            assert_eq!(a, encode_rgb8(224, 224, img, d, Filter::Adaptive).unwrap());
                            a
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(got.iter().all(|g| *g == want), "{d:?}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(encode_rgb8(0, 4, &[], LD6, Filter::Adaptive).is_err());
        assert!(encode_rgb8(2, 2, &[0; 11], LD6, Filter::Adaptive).is_err());
        let bad = Deflater::Libdeflate { level: 13 };
        assert!(encode_rgb8(1, 1, &[0; 3], bad, Filter::Adaptive).is_err());
        let bad = Deflater::Zlib {
            level: 6,
            strategy: ZlibStrategy::Rle,
            mem_level: 0,
        };
        assert!(encode_rgb8(1, 1, &[0; 3], bad, Filter::Adaptive).is_err());
    }
}
