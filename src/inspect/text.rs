//! Text on the pictures histoshard draws (the contact sheet, the heat maps):
//! imageproc's text drawing (anti-aliased, through `ab_glyph`) with DejaVu Sans
//! embedded in the binary, so no system font is looked for. The font and its
//! licence are in `assets/fonts/` (Bitstream Vera licence: bundling allowed).
//!
//! A size is the height in pixels of a line, ascent to descent (`ab_glyph`'s
//! `PxScale`; the em square is 0.86 of it for this font): a line is
//! [`line_height`] pixels high, its top at the `y` given to [`draw_text`].

use std::sync::LazyLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

/// Text that names things: class names, record counts.
pub const LABEL: f32 = 17.0;
/// Small print: thumbnail captions, the heat map's legend.
pub const SMALL: f32 = 12.0;

static FONT: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(include_bytes!("../../assets/fonts/DejaVuSans.ttf"))
        .expect("the embedded DejaVu Sans parses (unit-tested)")
});

/// Width in pixels of `text` at `size` (advances and kerning).
pub fn text_width(text: &str, size: f32) -> u32 {
    imageproc::drawing::text_size(PxScale::from(size), &*FONT, text).0
}

/// Height in pixels of a line at `size`: the font's ascent to its descent.
pub fn line_height(size: f32) -> u32 {
    FONT.as_scaled(PxScale::from(size)).height().ceil() as u32
}

/// `text` if it fits in `width` pixels at `size`, else its longest prefix that
/// fits with a trailing `…` (empty if not even that fits).
pub fn fit(text: &str, width: u32, size: f32) -> String {
    if text_width(text, size) <= width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len())
        .rev()
        .map(|n| chars[..n].iter().chain(['…'].iter()).collect::<String>())
        .find(|s| text_width(s, size) <= width)
        .unwrap_or_default()
}

/// Draws `text` with the top-left corner of its line at (`x`, `y`); whatever
/// falls outside `img` is clipped.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, size: f32, color: Rgb<u8>) {
    let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    imageproc::drawing::draw_text_mut(
        img,
        color,
        clamp(x),
        clamp(y),
        PxScale::from(size),
        &*FONT,
        text,
    );
}

/// `text` on its own image, `pad` pixels of `bg` around it.
pub fn render_text(text: &str, size: f32, pad: u32, fg: Rgb<u8>, bg: Rgb<u8>) -> RgbImage {
    let w = text_width(text, size) + 2 * pad;
    let h = line_height(size) + 2 * pad;
    let mut img = RgbImage::from_pixel(w.max(1), h, bg);
    draw_text(&mut img, pad.into(), pad.into(), text, size, fg);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    const FG: Rgb<u8> = Rgb([0, 0, 0]);
    const BG: Rgb<u8> = Rgb([255, 255, 255]);

    #[test]
    fn the_embedded_font_is_dejavu_sans() {
        let font = &*FONT;
        // DejaVu Sans: 2048 units per em, ascender 1901, descender -483.
        assert_eq!(font.units_per_em(), Some(2048.0));
        assert_eq!(
            (font.ascent_unscaled(), font.descent_unscaled()),
            (1901.0, -483.0)
        );
        assert_eq!(line_height(100.0), 100);
        assert_eq!(line_height(11.5), 12);
        // Every character the pictures use has a glyph (id 0 is "missing").
        for c in ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain("-_/.:,+()%=…é".chars())
        {
            assert_ne!(font.glyph_id(c).0, 0, "{c}");
        }
    }

    #[test]
    fn text_is_proportional_and_anti_aliased() {
        assert!(text_width("MMMM", LABEL) > 2 * text_width("iiii", LABEL));
        assert_eq!(text_width("", LABEL), 0);
        let img = render_text("Malignant", LABEL, 3, FG, BG);
        assert_eq!(
            img.dimensions(),
            (text_width("Malignant", LABEL) + 6, line_height(LABEL) + 6)
        );
        let ink = img.pixels().filter(|p| p.0[0] < 128).count();
        let grey = img.pixels().filter(|p| p.0[0] > 0 && p.0[0] < 255).count();
        assert!(ink > 60, "{ink} dark pixels");
        assert!(grey > 20, "{grey} part-covered pixels: not anti-aliased");
        // The padding stays clear: the descender of g stays in the line.
        for x in 0..img.width() {
            for y in (0..3).chain(img.height() - 3..img.height()) {
                assert_eq!(*img.get_pixel(x, y), BG, "({x}, {y})");
            }
        }
        // Non-ASCII class names are drawn, not boxed.
        let accent = render_text("é", LABEL, 0, FG, BG);
        assert!(accent.pixels().any(|p| *p != BG));
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("benign", 200, LABEL), "benign");
        let room = text_width("adenoc…", SMALL);
        let cut = fit("adenocarcinoma", room, SMALL);
        assert_eq!(cut, "adenoc…");
        assert!(text_width(&cut, SMALL) <= room);
        assert_eq!(fit("abc", 2, SMALL), "");
    }

    #[test]
    fn clipped_outside_the_image() {
        let mut img = RgbImage::from_pixel(20, 10, BG);
        draw_text(&mut img, -1_000_000_000_000, 2, "far left", LABEL, FG);
        draw_text(&mut img, 5, i64::MAX, "far below", LABEL, FG);
        assert!(img.pixels().all(|p| *p == BG));
        draw_text(&mut img, -4, -3, "W", LABEL, FG);
        assert!(img.pixels().any(|p| *p != BG));
    }
}
