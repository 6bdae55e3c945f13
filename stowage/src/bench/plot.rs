//! PNG line charts for the benchmarks' curves (BENCHMARKS.md embeds them).
//!
//! Text is drawn with DejaVu Sans read at run time (Debian's fonts-dejavu-core), so the
//! binary carries no font and needs no system font library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::backend::DrawingBackend;
use plotters::prelude::*;

/// Where the font is looked for, first found wins.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// What drawing on a PNG can fail with (the file, the encoder, the layout).
type DrawError = DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(transparent)]
    Font(#[from] FontError),
    #[error("drawing {}: {source}", .path.display())]
    Draw { path: PathBuf, source: DrawError },
}

/// The font the charts' text needs; found once per process, so kept to be told again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FontError {
    #[error("no DejaVu Sans font at {FONT_PATHS:?} (apt-get install fonts-dejavu-core)")]
    Missing,
    #[error("{path} is not a usable font")]
    Invalid { path: &'static str },
}

/// One named line of (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
        }
    }
}

/// A chart: a title, axis descriptions and the series drawn against them.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];

fn register_font() -> Result<(), FontError> {
    static REGISTERED: OnceLock<Result<(), FontError>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let Some((path, bytes)) = FONT_PATHS
                .iter()
                .find_map(|path| std::fs::read(path).ok().map(|bytes| (*path, bytes)))
            else {
                return Err(FontError::Missing);
            };
            // The font registry keeps &'static bytes; one font per process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| FontError::Invalid { path })
        })
        .clone()
}

/// The smallest and largest value of `axis` over every point, padded so the
/// lines do not sit on the frame.
fn span(series: &[Series], axis: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let values = series.iter().flat_map(|s| s.points.iter().map(&axis));
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() || !high.is_finite() {
        return (0.0, 1.0);
    }
    let low = low.min(0.0);
    let high = if high > low { high * 1.05 } else { low + 1.0 };
    (low, high)
}

/// Draws `chart` as a PNG of 960x540 pixels at `path`.
pub fn draw(path: &Path, chart: &Chart<'_>) -> Result<(), PlotError> {
    register_font()?;
    let draw_error = |source| PlotError::Draw {
        path: path.to_path_buf(),
        source,
    };
    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let (x_low, x_high) = span(chart.series, |p| p.0);
    let (y_low, y_high) = span(chart.series, |p| p.1);
    let mut context = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_low..x_high, y_low..y_high)
        .map_err(draw_error)?;
    context
        .configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw_error)?;
    for (index, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        context
            .draw_series(LineSeries::new(
                series.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(series.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        context
            .draw_series(
                series
                    .points
                    .iter()
                    .map(|p| Circle::new(*p, 3, colour.filled())),
            )
            .map_err(draw_error)?;
    }
    context
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_two_series() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("chart.png");
        let series = [
            Series::new("p50", vec![(0.0, 1.0), (5_000.0, 1.5), (10_000.0, 2.0)]),
            Series::new("p99", vec![(0.0, 3.0), (5_000.0, 4.0), (10_000.0, 6.0)]),
        ];
        let chart = Chart {
            title: "lifecycle latency",
            x_label: "published volumes",
            y_label: "ms",
            series: &series,
        };
        draw(&path, &chart).expect("chart drawn");
        let bytes = std::fs::read(&path).expect("png written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            bytes.len() > 5_000,
            "a chart with text and lines, not a blank image"
        );
    }

    #[test]
    fn span_pads_and_starts_at_zero() {
        let series = [Series::new("a", vec![(2.0, 10.0), (4.0, 20.0)])];
        assert_eq!(span(&series, |p| p.0), (0.0, 4.2));
        assert_eq!(span(&[], |p| p.1), (0.0, 1.0));
    }
}
