//! report.html in a real browser: headless Chromium loads the page `record` and `report`
//! write, and every message the page sends to the console fails the test (a script error,
//! a blocked attempt to load anything from outside). The checker is itself checked: the
//! same page with a broken script, and with an image from the network, must fail it.
//!
//! Chromium is Debian's `chromium` package (`bash .ci/setup` installs it); set
//! GILSCOPE_CHROMIUM to use another binary. Without one these tests fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{self, Interpreter, gilscope, run_command};

/// A page load takes a few seconds; a loaded machine may need many more.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "gilscope-it-html-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("GILSCOPE_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .expect("no chromium on PATH: install Debian's chromium package (bash .ci/setup)")
}

/// What the browser made of a page.
struct Loaded {
    /// The DOM after the page's script ran.
    dom: String,
    /// Every message the page sent to the console.
    console: Vec<String>,
}

fn load(page: &Path) -> Loaded {
    let profile = Scratch::new("profile");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()))
    .arg(format!("file://{}", page.display()));
    let run = run_command(cmd, BROWSER_TIMEOUT);
    assert_eq!(run.code, Some(0), "chromium failed: {run}");
    let console = run
        .stderr
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    Loaded {
        dom: run.stdout,
        console,
    }
}

/// The page loaded, its script ran to the end, and the console stayed silent.
fn assert_clean(page: &Path) -> Loaded {
    let loaded = load(page);
    assert!(
        loaded.console.is_empty(),
        "{} wrote to the console:\n{}",
        page.display(),
        loaded.console.join("\n")
    );
    assert!(
        loaded.dom.contains("<body data-ready=\"true\">"),
        "the page's script did not run to its end:\n{}",
        support::truncate(&loaded.dom, 2000)
    );
    loaded
}

fn python() -> Interpreter {
    support::pythons()
        .into_iter()
        .find(|p| p.gil_enabled)
        .expect("an interpreter with a GIL")
}

/// `record -- python demo.py`: threads counting primes, echoing, ticking.
fn record_demo(dir: &Path) {
    let python = python();
    let run = gilscope([
        "record".as_ref(),
        "--duration".as_ref(),
        "3".as_ref(),
        "--output".as_ref(),
        dir.as_os_str(),
        "--".as_ref(),
        python.path.as_os_str(),
        support::fixture("demo.py").as_os_str(),
        "--seconds".as_ref(),
        "10".as_ref(),
    ]);
    assert_eq!(run.code, Some(0), "record failed: {run}");
    assert!(
        run.stderr.contains("report.html"),
        "the summary does not list report.html: {run}"
    );
}

#[test]
fn report_html_of_a_recording_loads_in_chromium_without_console_messages() {
    let scratch = Scratch::new("demo");
    let dir = scratch.0.join("out");
    record_demo(&dir);
    let page = dir.join("report.html");
    let loaded = assert_clean(&page);
    for needle in [
        "id=\"flamegraphs\"",
        "<label for=\"tab-gil_wait\">",
        "primes-0",
        "count_primes",
        "id=\"recommendations\"",
    ] {
        assert!(
            loaded.dom.contains(needle),
            "no {needle:?} in the loaded page"
        );
    }

    // `gilscope report DIR` writes it again, as good, from recording.json alone.
    std::fs::remove_file(&page).expect("remove report.html");
    let run = gilscope(["report".as_ref(), dir.as_os_str()]);
    assert_eq!(run.code, Some(0), "report failed: {run}");
    assert_clean(&page);
}

#[test]
fn the_console_check_catches_a_broken_script_and_a_network_load() {
    let scratch = Scratch::new("broken");
    let dir = scratch.0.join("out");
    record_demo(&dir);
    let good = std::fs::read_to_string(dir.join("report.html")).expect("read report.html");
    let ready = "document.body.dataset.ready = \"true\";";
    assert!(
        good.contains(ready),
        "the page's script marks the page ready"
    );

    let broken = scratch.0.join("broken.html");
    std::fs::write(&broken, good.replace(ready, "noSuchFunction();")).unwrap();
    let loaded = load(&broken);
    assert!(
        loaded.console.iter().any(|m| m.contains("noSuchFunction")),
        "a broken script went unnoticed: {:?}",
        loaded.console
    );

    let fetching = scratch.0.join("fetching.html");
    let image = "<img alt=\"\" src=\"https://gilscope.invalid/pixel.png\"></main>";
    std::fs::write(&fetching, good.replacen("</main>", image, 1)).unwrap();
    let loaded = load(&fetching);
    assert!(
        loaded
            .console
            .iter()
            .any(|m| m.contains("gilscope.invalid")),
        "a load from the network went unnoticed: {:?}",
        loaded.console
    );
}
