//! SVG charts for the report (plotters, text drawn as SVG `<text>`, so no fonts are needed): the
//! KV-cache on/off curve, batch throughput and step latency, and the bandwidth roofline.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::models::ModelResult;
use crate::roofline::KernelResult;

const SIZE: (u32, u32) = (720, 440);

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

type LogAxis = plotters::coord::combinators::LogCoord<f64>;

/// A log-log chart on `root` with the report's caption style, axis areas and labels.
fn log_log<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: String,
    x: (f64, f64, &str),
    y: (f64, f64, &str),
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogAxis, LogAxis>>> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x.2)
        .y_desc(y.2)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Tokens/s against context length, with the KV cache and recomputing the prefix.
pub fn kv_cache(path: &Path, m: &ModelResult) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xs: Vec<f64> = m.kv_curve.iter().map(|k| k.length as f64).collect();
    let ys = m
        .kv_curve
        .iter()
        .flat_map(|k| [k.cached_tokens_per_s, k.uncached_tokens_per_s]);
    let (x0, x1) = bounds(xs.iter().copied());
    let (y0, y1) = bounds(ys);
    let mut chart = log_log(
        &root,
        format!("{}: next token with and without the KV cache", m.name),
        (x0, x1, "tokens in context"),
        (y0, y1, "tokens/s"),
    )?;
    let series = [
        (
            "KV cache",
            BLUE,
            m.kv_curve
                .iter()
                .map(|k| (k.length as f64, k.cached_tokens_per_s))
                .collect::<Vec<_>>(),
        ),
        (
            "recompute prefix",
            RED,
            m.kv_curve
                .iter()
                .map(|k| (k.length as f64, k.uncached_tokens_per_s))
                .collect(),
        ),
    ];
    for (label, color, points) in series {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Decode throughput and step latency against the number of sequences decoded together.
pub fn batches(path: &Path, m: &ModelResult) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x1 = m.batches.iter().map(|b| b.batch).max().unwrap_or(1) as f64 + 0.5;
    let (_, t1) = bounds(m.batches.iter().map(|b| b.tokens_per_s));
    let (_, l1) = bounds(m.batches.iter().map(|b| b.step_ms));
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: batched decode", m.name), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.5..x1, 0.0..t1)
        .map_err(err)?
        .set_secondary_coord(0.5..x1, 0.0..l1);
    chart
        .configure_mesh()
        .x_desc("sequences per step")
        .y_desc("tokens/s (all sequences)")
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_desc("ms per step")
        .draw()
        .map_err(err)?;
    let rate: Vec<(f64, f64)> = m
        .batches
        .iter()
        .map(|b| (b.batch as f64, b.tokens_per_s))
        .collect();
    let latency: Vec<(f64, f64)> = m
        .batches
        .iter()
        .map(|b| (b.batch as f64, b.step_ms))
        .collect();
    chart
        .draw_series(LineSeries::new(rate, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("throughput (left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_secondary_series(LineSeries::new(latency, RED.stroke_width(2)))
        .map_err(err)?
        .label("latency (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// GFLOP/s against arithmetic intensity for every kernel that does arithmetic, under the
/// measured bandwidth's slope (peak GB/s × FLOP/byte).
pub fn roofline(path: &Path, kernels: &[KernelResult], peak_gbps: f64) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let points: Vec<(&KernelResult, f64)> = kernels
        .iter()
        .filter(|k| k.flops > 0)
        .map(|k| (k, k.flops as f64 / k.bytes as f64))
        .collect();
    let (x0, x1) = bounds(points.iter().map(|p| p.1));
    let (x0, x1) = (x0.min(0.1), x1.max(100.0));
    let (y0, y1) = bounds(
        points
            .iter()
            .map(|p| p.0.gflops())
            .chain([peak_gbps * x0, peak_gbps * x1]),
    );
    let mut chart = log_log(
        &root,
        format!("Roofline: measured bandwidth {peak_gbps:.1} GB/s"),
        (x0, x1, "FLOP per byte"),
        (y0, y1, "GFLOP/s"),
    )?;
    chart
        .draw_series(LineSeries::new(
            [x0, x1].map(|x| (x, peak_gbps * x)),
            BLACK.stroke_width(2),
        ))
        .map_err(err)?
        .label("bandwidth bound")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN];
    for (i, (k, ai)) in points.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series([Circle::new((*ai, k.gflops()), 4, color.filled())])
            .map_err(err)?;
        chart
            .draw_series([Text::new(
                k.kernel.clone(),
                (*ai, k.gflops()),
                ("sans-serif", 11).into_font().color(&color),
            )])
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// A range around positive values, padded by a quarter on each side (log axes need > 0).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi == 0.0 {
        (0.1, 1.0)
    } else {
        (lo * 0.75, hi * 1.25)
    }
}
