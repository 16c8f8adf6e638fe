//! Command-line arguments (clap) and their conversion into validated options:
//! raw flags here, checked [`EngineOptions`] out, so nothing deeper parses text.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use imgnorm_core::options::{
    ChannelMode, DEFAULT_MAX_PIXELS, Dtype, EngineOptions, OptionsError, Orientation, Scope,
};

/// imgnorm: decode and min-max normalize image datasets, on one machine or many.
#[derive(Debug, Parser)]
#[command(name = "imgnorm", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a sample dataset, normalize it centralized and distributed, and
    /// show the results. Needs no data of yours.
    Demo(DemoArgs),
    /// Normalize a folder on one thread (the baseline).
    Centralized(CentralizedArgs),
    /// Generate a deterministic dataset of natural-looking images.
    Gen(GenArgs),
}

/// `imgnorm demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the sample dataset and the outputs go.
    #[arg(long, default_value = "demo")]
    pub dir: PathBuf,
    /// Number of sample images.
    #[arg(long, default_value_t = 200)]
    pub count: u64,
}

/// `imgnorm centralized`.
#[derive(Debug, Args)]
pub struct CentralizedArgs {
    /// Folder of images (searched recursively).
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for the dataset (created if missing).
    #[arg(long)]
    pub output: PathBuf,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Image formats `imgnorm gen` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GenFormatArg {
    /// JPEG only.
    Jpeg,
    /// PNG only.
    Png,
    /// Mostly JPEG, plus PNG 8/16-bit, gray, RGBA, BMP, TIFF, WebP, GIF.
    Mixed,
}

/// `imgnorm gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Random seed: the same seed gives the same files, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// File format.
    #[arg(long, value_enum, default_value = "jpeg")]
    pub format: GenFormatArg,
    /// Fixed size WxH (default: varied, 256 to 768 per side).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Spread images over N class folders (ImageFolder layout); 0 = flat.
    #[arg(long, default_value_t = 0)]
    pub classes: u32,
    /// JPEG quality 1-100.
    #[arg(long, default_value_t = 90)]
    pub quality: u8,
}

/// Engine options as flags, shared by every command that processes images.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Min/max over the whole image (all channels, like OpenCV) or per channel.
    #[arg(long, value_enum, default_value = "image")]
    pub scope: ScopeArg,
    /// Output range A,B (default 0,1 for f32/f16, full range for u8/u16).
    #[arg(long, value_parser = parse_range, allow_hyphen_values = true)]
    pub range: Option<(f64, f64)>,
    /// Output element type.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    /// Keep channels as stored, force RGB, or convert to gray (BT.601).
    #[arg(long, value_enum, default_value = "keep")]
    pub channels: ChannelsArg,
    /// Ignore the EXIF orientation (like OpenCV IMREAD_UNCHANGED) or apply it.
    #[arg(long, value_enum, default_value = "ignore")]
    pub exif_orientation: OrientationArg,
    /// Refuse images with more pixels than this, before decoding.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Accept truncated JPEGs (missing part filled) with a warning.
    #[arg(long)]
    pub allow_truncated: bool,
}

/// `--scope`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// One min/max over all pixels and channels.
    Image,
    /// One min/max per channel.
    Channel,
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    /// float32.
    F32,
    /// float16.
    F16,
    /// uint8.
    U8,
    /// uint16.
    U16,
}

/// `--channels`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChannelsArg {
    /// As stored.
    Keep,
    /// Three channels.
    Rgb,
    /// One channel.
    Gray,
}

/// `--exif-orientation`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrientationArg {
    /// Pixels as stored.
    Ignore,
    /// Apply the EXIF rotation.
    Apply,
}

impl EngineArgs {
    /// Validated engine options.
    pub fn to_options(&self) -> Result<EngineOptions, OptionsError> {
        let dtype = match self.dtype {
            DtypeArg::F32 => Dtype::F32,
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::U8 => Dtype::U8,
            DtypeArg::U16 => Dtype::U16,
        };
        let opts = EngineOptions {
            scope: match self.scope {
                ScopeArg::Image => Scope::Image,
                ScopeArg::Channel => Scope::Channel,
            },
            range: self.range.unwrap_or(dtype.default_range()),
            dtype,
            channels: match self.channels {
                ChannelsArg::Keep => ChannelMode::Keep,
                ChannelsArg::Rgb => ChannelMode::Rgb,
                ChannelsArg::Gray => ChannelMode::Gray,
            },
            orientation: match self.exif_orientation {
                OrientationArg::Ignore => Orientation::Ignore,
                OrientationArg::Apply => Orientation::Apply,
            },
            max_pixels: self.max_pixels,
            allow_truncated: self.allow_truncated,
        };
        opts.validate()?;
        Ok(opts)
    }
}

/// Parses `A,B`.
pub fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected A,B (e.g. 0,1 or -1,1), got {s:?}"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|e| format!("{v:?} is not a number: {e}"))
    };
    let (a, b) = (p(a)?, p(b)?);
    if !a.is_finite() || !b.is_finite() {
        return Err("range bounds must be finite".into());
    }
    if a == b {
        return Err("range bounds must differ".into());
    }
    Ok((a, b))
}

/// Parses `WxH`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WxH (e.g. 512x512), got {s:?}"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{v:?} is not a positive integer"))
    };
    Ok((p(w)?, p(h)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_sizes() {
        assert_eq!(parse_range("-1,1"), Ok((-1.0, 1.0)));
        assert!(parse_range("1").is_err());
        assert!(parse_range("1,1").is_err());
        assert!(parse_range("nan,1").is_err());
        assert_eq!(parse_size("512x384"), Ok((512, 384)));
        assert!(parse_size("0x3").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "imgnorm",
            "centralized",
            "--input",
            "a",
            "--output",
            "b",
            "--range",
            "-1,1",
            "--dtype",
            "f16",
        ])
        .unwrap();
        let Command::Centralized(c) = cli.command else {
            panic!("wrong command")
        };
        let o = c.engine.to_options().unwrap();
        assert_eq!(o.range, (-1.0, 1.0));
        assert_eq!(o.dtype, Dtype::F16);
    }
}
