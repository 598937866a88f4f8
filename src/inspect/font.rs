//! A tiny embedded 5×7 bitmap font (A–Z, 0–9 and a little punctuation) for the
//! contact sheet's labels, so no font file or text-rendering crate is needed.
//! Lower case is drawn as upper case; anything else as a hollow box.

use image::{Rgb, RgbImage};

/// Glyph size in font pixels; a character advances `ADVANCE` font pixels.
pub const GLYPH_W: u32 = 5;
pub const GLYPH_H: u32 = 7;
pub const ADVANCE: u32 = GLYPH_W + 1;

/// Rows top to bottom; bit 4 is the leftmost column.
type Glyph = [u8; 7];

const BOX: Glyph = [
    0b11111, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11111,
];

#[rustfmt::skip]
fn glyph(c: char) -> Glyph {
    match c.to_ascii_uppercase() {
        'A' => [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'B' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110],
        'C' => [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110],
        'D' => [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100],
        'E' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111],
        'F' => [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000],
        'G' => [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111],
        'H' => [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001],
        'I' => [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        'J' => [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100],
        'K' => [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001],
        'L' => [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111],
        'M' => [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001],
        'N' => [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001],
        'O' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'P' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000],
        'Q' => [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101],
        'R' => [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001],
        'S' => [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110],
        'T' => [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100],
        'U' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110],
        'V' => [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100],
        'W' => [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010],
        'X' => [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001],
        'Y' => [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100],
        'Z' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111],
        '0' => [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110],
        '1' => [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110],
        '2' => [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111],
        '3' => [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110],
        '4' => [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010],
        '5' => [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110],
        '6' => [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110],
        '7' => [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000],
        '8' => [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110],
        '9' => [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100],
        '-' => [0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000],
        '_' => [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111],
        '/' => [0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000],
        '.' => [0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100],
        ',' => [0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000],
        '=' => [0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000],
        ':' => [0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000],
        '+' => [0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000],
        '(' => [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010],
        ')' => [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000],
        ' ' => [0; 7],
        _ => BOX,
    }
}

/// Width in pixels of `text` drawn at `scale` (no trailing spacing).
pub fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    (n * ADVANCE).saturating_sub(1) * scale
}

/// Height in pixels of a line drawn at `scale`.
pub fn text_height(scale: u32) -> u32 {
    GLYPH_H * scale
}

/// The longest prefix of `text` that fits in `width` pixels at `scale`, with a
/// trailing `.` when something was cut.
pub fn fit(text: &str, width: u32, scale: u32) -> String {
    if text_width(text, scale) <= width {
        return text.to_string();
    }
    let max = ((width / scale + 1) / ADVANCE) as usize;
    if max == 0 {
        return String::new();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('.');
    s
}

/// Draws `text` with its top-left corner at (`x`, `y`), each font pixel a
/// `scale`×`scale` square; whatever falls outside `img` is clipped.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let s = i64::from(scale);
    for (i, c) in text.chars().enumerate() {
        let gx = x + i as i64 * i64::from(ADVANCE) * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                    let px = gx + i64::from(col) * s;
                    let py = y + row as i64 * s;
                    super::sheet::fill_rect(img, px, py, scale, scale, color);
                }
            }
        }
    }
}

/// `text` on its own image, `pad` pixels of `bg` around it.
pub fn render_text(text: &str, scale: u32, pad: u32, fg: Rgb<u8>, bg: Rgb<u8>) -> RgbImage {
    let w = text_width(text, scale) + 2 * pad;
    let h = text_height(scale) + 2 * pad;
    let mut img = RgbImage::from_pixel(w.max(1), h, bg);
    draw_text(&mut img, pad.into(), pad.into(), text, scale, fg);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    const FG: Rgb<u8> = Rgb([0, 0, 0]);
    const BG: Rgb<u8> = Rgb([255, 255, 255]);

    fn set(img: &RgbImage, x: u32, y: u32) -> bool {
        *img.get_pixel(x, y) == FG
    }

    #[test]
    fn renders_malignant_at_double_size() {
        let img = render_text("MALIGNANT", 2, 0, FG, BG);
        assert_eq!(img.dimensions(), ((9 * 6 - 1) * 2, 14));
        let on = img.pixels().filter(|p| **p == FG).count();
        assert!(on > 200 && on < img.pixels().count() / 2, "{on} pixels set");
        // 'M': both outer columns fully set, the gap column between letters empty.
        for y in 0..14 {
            assert!(set(&img, 0, y) && set(&img, 1, y) && set(&img, 8, y));
            assert!(!set(&img, 10, y) && !set(&img, 11, y));
        }
        // 'M' has its diagonal at font pixel (1, 1), not at (2, 0).
        assert!(set(&img, 2, 2) && !set(&img, 4, 0));
        // 'A' (2nd char, starts at x=12): apex row has no corner pixels.
        assert!(!set(&img, 12, 0) && set(&img, 14, 0));
        // lower case draws the same glyphs
        assert_eq!(render_text("malignant", 2, 0, FG, BG), img);
    }

    #[test]
    fn every_promised_character_has_a_glyph_and_unknowns_a_box() {
        for c in ('A'..='Z').chain('0'..='9').chain("-_/.:+()".chars()) {
            let g = glyph(c);
            assert_ne!(g, BOX, "{c}");
            assert!(g.iter().any(|&r| r != 0), "{c} is blank");
            assert!(g.iter().all(|&r| r < 32), "{c} is wider than 5");
        }
        assert_eq!(glyph('é'), BOX);
        assert_eq!(glyph(' '), [0; 7]);
        // no two glyphs alike
        let all: Vec<char> = ('A'..='Z')
            .chain('0'..='9')
            .chain("-_/.:+()".chars())
            .collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(glyph(*a), glyph(*b), "{a} and {b}");
            }
        }
    }

    #[test]
    fn fit_truncates_with_a_dot() {
        assert_eq!(fit("BENIGN", 200, 2), "BENIGN");
        let cut = fit("ADENOCARCINOMA", text_width("ADENO", 2), 2);
        assert_eq!(cut, "ADEN.");
        assert!(text_width(&cut, 2) <= text_width("ADENO", 2));
        assert_eq!(fit("ABC", 3, 1), "");
    }
}
