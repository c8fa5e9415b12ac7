//! Expert colours: the Okabe–Ito palette, then Paul Tol's muted palette, both chosen to stay
//! distinguishable with the common colour-vision deficiencies. Beyond 16 experts the colours
//! repeat and the expert number (always shown in labels and tooltips) tells them apart.

const COLOURS: [&str; 16] = [
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255",
];

/// The colour of expert `e`.
pub fn expert_colour(e: usize) -> &'static str {
    COLOURS[e % COLOURS.len()]
}
