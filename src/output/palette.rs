//! The colours of every picture: each thread state has its own colour family (`gil_held`
//! green, `gil_wait` red, `native_nogil` blue, `idle` grey), and code running in a state is
//! drawn in a shade of that family, the shade picked from the function's name so one
//! function keeps its shade in every graph. Thread frames take the colour of their class.
//! The flamegraph SVGs, report.html, trace.json (through Chrome's named colours) and `top`
//! (through the terminal's) follow the same families.

use crate::model::report::ThreadClass;
use crate::model::state::ThreadState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Rgb {
    /// `#rrggbb`, for CSS and SVG.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

/// A colour family: one hue, and the saturation and range of lightness its shades take.
struct Family {
    hue: f64,
    saturation: f64,
    /// Lightness of the shades of code frames: from `light.0` to `light.1`.
    light: (f64, f64),
    /// Lightness of the state's own frame and of its legend swatch (stronger than code).
    own: f64,
}

fn family(state: ThreadState) -> Family {
    match state {
        ThreadState::GilHeld => Family {
            hue: 128.0,
            saturation: 0.48,
            light: (0.58, 0.76),
            own: 0.46,
        },
        ThreadState::GilWait => Family {
            hue: 3.0,
            saturation: 0.72,
            light: (0.64, 0.80),
            own: 0.56,
        },
        ThreadState::NativeNogil => Family {
            hue: 200.0,
            saturation: 0.62,
            light: (0.62, 0.80),
            own: 0.50,
        },
        ThreadState::Idle => Family {
            hue: 215.0,
            saturation: 0.07,
            light: (0.74, 0.86),
            own: 0.64,
        },
    }
}

/// The state's own colour: its frame in `flamegraph.svg`, legends, bars, `report.html`.
pub fn state_colour(state: ThreadState) -> Rgb {
    let f = family(state);
    hsl(f.hue, f.saturation, f.own)
}

/// Code that ran in `state`: a shade of the state's family chosen by `name`, the same for the
/// same name wherever it appears.
pub fn code_colour(state: ThreadState, name: &str) -> Rgb {
    let f = family(state);
    let hash = fnv1a(name);
    let t = (hash & 0xffff) as f64 / 65535.0;
    // A small shift of hue too, so neighbours of equal lightness still differ.
    let shift = ((hash >> 16) & 0xff) as f64 / 255.0 * 12.0 - 6.0;
    hsl(
        f.hue + shift,
        f.saturation,
        f.light.0 + t * (f.light.1 - f.light.0),
    )
}

/// A thread's frame, by the class of the thread: the family of the state that makes the class,
/// darker and greyer than code, so the row of threads stands apart from the code above it.
pub fn class_colour(class: ThreadClass) -> Rgb {
    match class {
        ThreadClass::CpuBound => hsl(128.0, 0.38, 0.47),
        ThreadClass::GilBound => hsl(3.0, 0.50, 0.52),
        ThreadClass::Native => hsl(200.0, 0.50, 0.49),
        // Mostly idle on I/O or sleep: sand, to tell it from the grey of `idle`.
        ThreadClass::IoBound => hsl(38.0, 0.50, 0.58),
        ThreadClass::Idle => hsl(215.0, 0.08, 0.56),
    }
}

/// Frames that belong to no state or thread (the root).
pub const NEUTRAL: Rgb = Rgb {
    r: 0xd8,
    g: 0xd8,
    b: 0xd8,
};

/// The classes in the order legends list them.
pub const CLASSES: [ThreadClass; 5] = [
    ThreadClass::CpuBound,
    ThreadClass::GilBound,
    ThreadClass::Native,
    ThreadClass::IoBound,
    ThreadClass::Idle,
];

/// The colour name a Chrome trace event (`cname`) takes: chrome://tracing draws events only
/// in the colours of its own fixed palette, so each state maps to the nearest of its family.
pub fn trace_cname(state: ThreadState) -> &'static str {
    match state {
        ThreadState::GilHeld => "good",              // rgb(0, 125, 0)
        ThreadState::GilWait => "terrible",          // rgb(180, 0, 0)
        ThreadState::NativeNogil => "rail_response", // rgb(67, 135, 253)
        ThreadState::Idle => "grey",                 // rgb(221, 221, 221)
    }
}

/// FNV-1a: a hash that stays the same across builds and platforms, so shades do too.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// HSL (hue in degrees, saturation and lightness in 0..=1) to RGB.
fn hsl(hue: f64, saturation: f64, lightness: f64) -> Rgb {
    let h = hue.rem_euclid(360.0) / 60.0;
    let c = (1.0 - (2.0 * lightness - 1.0).abs()) * saturation;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = lightness - c / 2.0;
    let byte = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    Rgb {
        r: byte(r),
        g: byte(g),
        b: byte(b),
    }
}

/// Hue in degrees and saturation of `rgb` (for tests that check a colour's family).
pub fn hue_and_saturation(rgb: Rgb) -> (f64, f64) {
    let [r, g, b] = [rgb.r, rgb.g, rgb.b].map(|v| f64::from(v) / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let lightness = (max + min) / 2.0;
    if delta == 0.0 {
        return (0.0, 0.0);
    }
    let saturation = delta / (1.0 - (2.0 * lightness - 1.0).abs());
    let hue = if max == r {
        60.0 * ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    (hue, saturation)
}

/// The state whose family `rgb` belongs to, if any (for tests and checks).
pub fn family_of(rgb: Rgb) -> Option<ThreadState> {
    let (hue, saturation) = hue_and_saturation(rgb);
    ThreadState::ALL.into_iter().find(|&state| {
        let f = family(state);
        if f.saturation < 0.15 {
            return saturation < 0.15;
        }
        let distance = (hue - f.hue).rem_euclid(360.0);
        saturation >= 0.15 && distance.min(360.0 - distance) <= 10.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_own_family_and_code_stays_in_it() {
        for state in ThreadState::ALL {
            assert_eq!(family_of(state_colour(state)), Some(state), "{state:?}");
            for name in ["count_primes (demo.py:34)", "<module> (a.py:1)", "", "x"] {
                let colour = code_colour(state, name);
                assert_eq!(
                    family_of(colour),
                    Some(state),
                    "{state:?} {name:?} {colour:?}"
                );
            }
        }
    }

    #[test]
    fn a_function_keeps_its_shade_and_neighbours_differ() {
        let a = code_colour(ThreadState::GilWait, "spin (w.py:3)");
        assert_eq!(a, code_colour(ThreadState::GilWait, "spin (w.py:3)"));
        assert_ne!(a, code_colour(ThreadState::GilWait, "spin (w.py:4)"));
    }

    #[test]
    fn classes_take_the_family_of_the_state_that_makes_them() {
        let family = |class| family_of(class_colour(class));
        assert_eq!(family(ThreadClass::CpuBound), Some(ThreadState::GilHeld));
        assert_eq!(family(ThreadClass::GilBound), Some(ThreadState::GilWait));
        assert_eq!(family(ThreadClass::Native), Some(ThreadState::NativeNogil));
        assert_eq!(family(ThreadClass::Idle), Some(ThreadState::Idle));
        assert_eq!(
            family(ThreadClass::IoBound),
            None,
            "sand is no state's colour"
        );
    }

    #[test]
    fn trace_colours_are_the_nearest_of_chrome_palette_to_each_family() {
        // chrome://tracing's reserved colours (catapult's color_scheme), a few of them.
        let chrome = |name: &str| match name {
            "good" => Rgb { r: 0, g: 125, b: 0 },
            "terrible" => Rgb { r: 180, g: 0, b: 0 },
            "rail_response" => Rgb {
                r: 67,
                g: 135,
                b: 253,
            },
            "grey" => Rgb {
                r: 221,
                g: 221,
                b: 221,
            },
            other => panic!("{other} is not one of Chrome's colours"),
        };
        for state in ThreadState::ALL {
            let (hue, saturation) = hue_and_saturation(chrome(trace_cname(state)));
            let nearest = ThreadState::ALL
                .into_iter()
                .min_by_key(|&s| {
                    let f = family(s);
                    if (f.saturation < 0.15) != (saturation < 0.15) {
                        return u32::MAX;
                    }
                    let d = (hue - f.hue).rem_euclid(360.0);
                    d.min(360.0 - d) as u32
                })
                .unwrap();
            assert_eq!(nearest, state, "{}", trace_cname(state));
        }
    }

    #[test]
    fn hsl_round_trips_known_colours() {
        assert_eq!(hsl(0.0, 1.0, 0.5), Rgb { r: 255, g: 0, b: 0 });
        assert_eq!(hsl(120.0, 1.0, 0.25), Rgb { r: 0, g: 128, b: 0 });
        assert_eq!(hsl(240.0, 0.0, 1.0).hex(), "#ffffff");
    }
}
