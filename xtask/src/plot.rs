//! The benchmark plots (PNG, plotters): how time and bytes grow (`cargo xtask bench growth`),
//! and the expert cache's hit rate against its budget (`cargo xtask bench shards`).

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of a panel: a name, a colour and its points.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Registers the TTF that the plots' text is drawn with (once per process).
fn register_font() -> Result<()> {
    let bytes =
        std::fs::read(FONT).with_context(|| format!("reading {FONT} (fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))
}

/// A panel with a log₂ x axis (`log_x`; each point a power of two, labelled with the values)
/// or a linear one, and a linear y axis from 0.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    log_x: bool,
) -> Result<()> {
    let tx = move |x: f64| if log_x { x.log2() } else { x };
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(move |p| tx(p.0)));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    // Headroom above the highest point for the legend.
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        * 1.45;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            if log_x {
                x_min - 0.2..x_max + 0.2
            } else {
                0.0..x_max
            },
            0.0..y_max.max(1e-9),
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(if log_x {
            (x_max - x_min) as usize + 1
        } else {
            11
        })
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{:.0}", if log_x { x.exp2() } else { *x }))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for s in series {
        let color = s.color;
        let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (tx(x), y)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn points(rows: &Value, key: &str, scale: f64) -> Vec<(f64, f64)> {
    rows.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| Some((r["x"].as_f64()?, r[key].as_f64()? * scale)))
                .collect()
        })
        .unwrap_or_default()
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const GREY: RGBColor = RGBColor(120, 120, 120);

/// Writes `growth-length.png` and `growth-experts.png` into `dir` from `bench growth`'s JSON.
pub fn growth(data: &Value, dir: &Path) -> Result<()> {
    register_font()?;
    let backend = data["backend"].as_str().unwrap_or("cpu");
    let charts = [
        (
            "growth-length.png",
            &data["lengths"],
            "input tokens",
            format!("Input length (default model, {backend})"),
        ),
        (
            "growth-experts.png",
            &data["experts"],
            "experts per sparse layer",
            format!("Experts per layer (random models, {backend})"),
        ),
    ];
    for (file, rows, x_label, title) in charts {
        let path = dir.join(file);
        let root = BitMapBackend::new(&path, (1280, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let (left, right) = root.split_horizontally(640);
        panel(
            &left,
            &format!("{title}: time"),
            (x_label, "milliseconds"),
            &[
                Series {
                    name: "encoder, per input token".into(),
                    color: BLUE_,
                    points: points(rows, "encode_ms_per_token", 1.0),
                },
                Series {
                    name: "decoder, per generated token".into(),
                    color: ORANGE,
                    points: points(rows, "decode_ms_per_token", 1.0),
                },
            ],
            true,
        )?;
        panel(
            &right,
            &format!("{title}: bytes"),
            (x_label, "MB"),
            &[
                Series {
                    name: "expert bytes fetched (input and decoded tokens)".into(),
                    color: GREEN_,
                    points: points(rows, "bytes_fetched", 1e-6),
                },
                Series {
                    name: "all expert bytes".into(),
                    color: GREY,
                    points: points(rows, "expert_bytes_total", 1e-6),
                },
            ],
            true,
        )?;
        root.present().map_err(|e| anyhow!("{e}"))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// One colour per line: the optimum and the ten policies.
const LINES: [RGBColor; 11] = [
    BLACK,
    BLUE_,
    ORANGE,
    GREEN_,
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    GREY,
];

/// Writes `cache-policies.png` into `dir` from `bench shards`' JSON: hit rate against budget,
/// one line per policy plus the optimum.
pub fn cache(data: &Value, dir: &Path) -> Result<()> {
    register_font()?;
    let plot = &data["plot"];
    let series: Vec<Series> = plot["series"]
        .as_array()
        .context("bench shards' JSON has no plot series")?
        .iter()
        .zip(LINES.iter().cycle())
        .map(|(s, &color)| Series {
            name: s["name"].as_str().unwrap_or("?").to_owned(),
            color,
            points: points(&s["points"], "hit_rate", 100.0),
        })
        .collect();
    let path = dir.join("cache-policies.png");
    let root = BitMapBackend::new(&path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let title = format!(
        "Expert cache hit rate against budget ({}, one session)",
        plot["model"].as_str().unwrap_or("?")
    );
    panel(
        &root,
        &title,
        (
            "budget (% of all experts, one shared budget)",
            "hit rate (%)",
        ),
        &series,
        false,
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both plots are written as PNG files from `bench growth`'s JSON.
    #[test]
    fn growth_plots_are_png_files() {
        let row = |x: usize, ms: f64| {
            serde_json::json!({ "x": x, "encode_ms_per_token": ms, "decode_ms_per_token": 2.0 * ms,
                "bytes_fetched": 1e6 * ms, "expert_bytes_total": 8e6 })
        };
        let data = serde_json::json!({
            "backend": "cpu",
            "lengths": [row(16, 1.0), row(64, 0.5), row(512, 0.4)],
            "experts": [row(8, 0.2), row(256, 0.25)],
        });
        let dir = std::env::temp_dir().join(format!("switchscope-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        growth(&data, &dir).unwrap();
        for name in ["growth-length.png", "growth-experts.png"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{name}");
            assert!(bytes.len() > 10_000, "{name} has {} bytes", bytes.len());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The cache plot is a PNG file from `bench shards`' JSON.
    #[test]
    fn the_cache_plot_is_a_png_file() {
        let line = |name: &str, rate: f64| {
            serde_json::json!({ "name": name, "points": [
                { "x": 10, "hit_rate": rate }, { "x": 50, "hit_rate": rate * 2.0 }] })
        };
        let data = serde_json::json!({ "plot": { "model": "m",
            "series": [line("optimum", 0.4), line("lru", 0.2)] } });
        let dir = std::env::temp_dir().join(format!("switchscope-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        cache(&data, &dir).unwrap();
        let bytes = std::fs::read(dir.join("cache-policies.png")).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
