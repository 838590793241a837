//! `query --preview`: each hit's picture in the terminal, under its row.
//!
//! Protocols: kitty's graphics protocol (PNG, base64 in 4 KiB chunks), iTerm2's inline
//! images (also WezTerm; the JPEG as is), sixel (a 6×6×6 colour cube), and half blocks
//! (`▀` with 24-bit foreground and background colours) anywhere else. `auto` picks from the
//! environment (`KITTY_WINDOW_ID`/`TERM=xterm-kitty`, `TERM_PROGRAM`/`LC_TERMINAL`, a sixel
//! terminal's `TERM`), and shows nothing when stdout is not a terminal.

use std::io::IsTerminal;

use base64::Engine as _;

/// How pictures are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Chosen from the terminal (nothing into a pipe).
    Auto,
    /// kitty's graphics protocol.
    Kitty,
    /// iTerm2 / WezTerm inline images.
    Iterm,
    /// DEC sixel graphics.
    Sixel,
    /// Unicode half blocks with 24-bit colour.
    Blocks,
    /// No previews.
    None,
}

/// Width of a preview in terminal columns (half blocks: one pixel column each).
pub const COLUMNS: u32 = 24;
/// Height of a kitty or iTerm2 preview in terminal rows.
const ROWS: u32 = 12;

impl Protocol {
    /// `auto` resolved for this process's stdout and environment.
    pub fn resolve(self) -> Protocol {
        if self != Protocol::Auto {
            return self;
        }
        if !std::io::stdout().is_terminal() {
            return Protocol::None;
        }
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let term = var("TERM");
        if !var("KITTY_WINDOW_ID").is_empty() || term.contains("kitty") {
            Protocol::Kitty
        } else if matches!(var("TERM_PROGRAM").as_str(), "iTerm.app" | "WezTerm")
            || var("LC_TERMINAL") == "iTerm2"
        {
            Protocol::Iterm
        } else if ["mlterm", "foot", "yaft", "sixel"]
            .iter()
            .any(|t| term.contains(t))
        {
            Protocol::Sixel
        } else {
            Protocol::Blocks
        }
    }
}

/// The escape sequences (and text) that draw `jpeg` with `protocol`, ending with a newline;
/// `None` when the picture does not decode.
pub fn render(protocol: Protocol, jpeg: &[u8]) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match protocol {
        Protocol::Auto | Protocol::None => None,
        Protocol::Iterm => Some(format!(
            "\x1b]1337;File=inline=1;size={};width={COLUMNS};height={ROWS};preserveAspectRatio=1:{}\x07\n",
            jpeg.len(),
            b64.encode(jpeg)
        )),
        Protocol::Kitty => {
            // kitty takes PNG (f=100) or raw pixels, not JPEG: PNG is the smaller.
            let img = image::load_from_memory(jpeg).ok()?;
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png).ok()?;
            let data = b64.encode(png.into_inner());
            let chunks: Vec<&str> = data
                .as_bytes()
                .chunks(4096)
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect();
            let mut out = String::new();
            for (i, c) in chunks.iter().enumerate() {
                let more = u8::from(i + 1 < chunks.len());
                if i == 0 {
                    out.push_str(&format!(
                        "\x1b_Ga=T,f=100,c={COLUMNS},r={ROWS},m={more};{c}\x1b\\"
                    ));
                } else {
                    out.push_str(&format!("\x1b_Gm={more};{c}\x1b\\"));
                }
            }
            out.push('\n');
            Some(out)
        }
        Protocol::Sixel => {
            let img = fit(jpeg, COLUMNS * 8)?;
            Some(sixel(&img) + "\n")
        }
        Protocol::Blocks => {
            let img = fit(jpeg, COLUMNS)?;
            let mut out = String::new();
            for y in (0..img.height()).step_by(2) {
                for x in 0..img.width() {
                    let t = img.get_pixel(x, y);
                    let b = if y + 1 < img.height() {
                        *img.get_pixel(x, y + 1)
                    } else {
                        image::Rgb([0, 0, 0])
                    };
                    out.push_str(&format!(
                        "\x1b[38;2;{};{};{}m\x1b[48;2;{};{};{}m▀",
                        t[0], t[1], t[2], b[0], b[1], b[2]
                    ));
                }
                out.push_str("\x1b[0m\n");
            }
            Some(out)
        }
    }
}

/// The picture scaled to `width` pixels (aspect kept).
fn fit(jpeg: &[u8], width: u32) -> Option<image::RgbImage> {
    let img = image::load_from_memory(jpeg).ok()?.to_rgb8();
    let h = (u64::from(img.height()) * u64::from(width) / u64::from(img.width().max(1))).max(1);
    Some(image::imageops::resize(
        &img,
        width,
        u32::try_from(h).unwrap_or(width),
        image::imageops::FilterType::Triangle,
    ))
}

/// Sixel data of `img` on a 6×6×6 colour cube.
fn sixel(img: &image::RgbImage) -> String {
    let level = |v: u8| (u16::from(v) * 5 + 127) / 255;
    let index = |p: &image::Rgb<u8>| level(p[0]) * 36 + level(p[1]) * 6 + level(p[2]);
    let mut out = String::from("\x1bPq");
    for i in 0..216u16 {
        let pct = |l: u16| l * 100 / 5;
        out.push_str(&format!(
            "#{i};2;{};{};{}",
            pct(i / 36),
            pct(i / 6 % 6),
            pct(i % 6)
        ));
    }
    let (w, h) = img.dimensions();
    for band in (0..h).step_by(6) {
        let mut used: Vec<u16> = Vec::new();
        for y in band..(band + 6).min(h) {
            for x in 0..w {
                let c = index(img.get_pixel(x, y));
                if !used.contains(&c) {
                    used.push(c);
                }
            }
        }
        for c in used {
            out.push_str(&format!("#{c}"));
            for x in 0..w {
                let mut bits = 0u8;
                for dy in 0..6 {
                    let y = band + dy;
                    if y < h && index(img.get_pixel(x, y)) == c {
                        bits |= 1 << dy;
                    }
                }
                out.push(char::from(63 + bits));
            }
            out.push('$');
        }
        out.push('-');
    }
    out.push_str("\x1b\\");
    out
}
