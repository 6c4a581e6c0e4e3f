//! Line charts drawn with plotters into PNG files (the experiments' and benchmarks' figures).
//!
//! Text needs a TrueType font: DejaVu Sans from the usual system places (Debian's
//! `fonts-dejavu-core`), or the file `TERN_CHART_FONT` names.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// One chart of a figure; figures stack their panels vertically.
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A vertical line at this x (an event, such as a cache flush), labelled.
    pub marker: Option<(f64, String)>,
    /// Logarithmic y axis.
    pub log_y: bool,
}

/// The colour of event markers.
const MARKER: RGBColor = RGBColor(44, 160, 44);

const FONT_PLACES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
];

fn register_font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var("TERN_CHART_FONT")
            .ok()
            .or_else(|| {
                FONT_PLACES
                    .iter()
                    .find(|p| Path::new(p).is_file())
                    .map(|p| p.to_string())
            })
            .ok_or("no TrueType font found: install fonts-dejavu-core or set TERN_CHART_FONT")?;
        let bytes = std::fs::read(&path).map_err(|e| format!("read font {path}: {e}"))?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into()))
            .map_err(|_| format!("{path} is not a font plotters can use"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Draws `panels` one above the other into the PNG `path`; x is shared, labelled `x_label`.
pub fn draw(path: &Path, title: &str, x_label: &str, panels: &[Panel]) -> anyhow::Result<()> {
    register_font()?;
    let height = 60 + 360 * panels.len() as u32;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 24))
        .map_err(|e| anyhow!("{e}"))?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, x_label, panel).map_err(|e| anyhow!("{e}"))?;
    }
    root.present()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("write {}", path.display()))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel(
    area: &Area,
    x_label: &str,
    panel: &Panel,
) -> Result<(), Box<dyn std::error::Error + 'static>> {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max, mut y_min) = (1.0f64, 1.0f64, f64::MAX);
    for (x, y) in points {
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
        if *y > 0.0 {
            y_min = y_min.min(*y);
        }
    }
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if panel.log_y {
        let lo = if y_min == f64::MAX { 0.1 } else { y_min / 2.0 };
        let hi = y_max * 2.0;
        plot(
            builder,
            x_max,
            (lo..hi).log_scale(),
            (lo, hi),
            x_label,
            panel,
        )
    } else {
        let hi = y_max * 1.15;
        plot(builder, x_max, 0f64..hi, (0.0, hi), x_label, panel)
    }
}

/// Draws `panel` on axes 0..`x_max` by `y` (linear or logarithmic, spanning `y_span`). On a log
/// axis, points at or below zero are left out.
fn plot<Y>(
    mut builder: ChartBuilder<'_, '_, BitMapBackend<'_>>,
    x_max: f64,
    y: Y,
    y_span: (f64, f64),
    x_label: &str,
    panel: &Panel,
) -> Result<(), Box<dyn std::error::Error + 'static>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = builder.build_cartesian_2d(0f64..x_max, y)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .label_style(("sans-serif", 13))
        .draw()?;
    for s in &panel.series {
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| !panel.log_y || p.1 > 0.0)
            .copied()
            .collect();
        let color = s.color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if let Some((x, label)) = &panel.marker {
        chart
            .draw_series(LineSeries::new(
                vec![(*x, y_span.0), (*x, y_span.1)],
                MARKER.stroke_width(3),
            ))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MARKER.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_written_as_png() {
        if register_font().is_err() {
            eprintln!("no font on this machine: chart not drawn");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let panel = |log_y| Panel {
            title: "t".into(),
            y_label: "y".into(),
            series: vec![Series {
                label: "a".into(),
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 0.0)],
                color: RED,
            }],
            marker: Some((1.0, "m".into())),
            log_y,
        };
        draw(&path, "title", "x", &[panel(false), panel(true)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 1000);
    }
}
