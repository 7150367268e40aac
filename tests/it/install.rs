//! Installing gilscope the way Python users do (a wheel built by maturin from
//! pyproject.toml, installed with pip), and a command line that explains itself: version,
//! shell completions, worked examples in every `--help`, the man page.

use crate::support::{self, Run, gilscope, run_command};
use clap::CommandFactory;
use gilscope::cli::Cli;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The subcommands a user can name, hidden ones (`man`) included; not clap's `help`.
fn subcommands() -> Vec<String> {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    for expected in [
        "record",
        "dump",
        "report",
        "diff",
        "top",
        "completions",
        "man",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} in {names:?}"
        );
    }
    names
}

fn assert_ok(run: &Run, what: &str) {
    assert_eq!(run.code, Some(0), "{what}: {run}");
}

#[test]
fn version_is_cargos() {
    let run = gilscope(["--version"]);
    assert_ok(&run, "gilscope --version");
    assert_eq!(run.stdout.trim(), format!("gilscope {VERSION}"));
}

#[test]
fn completions_for_every_shell_mention_record() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let run = gilscope(["completions", shell]);
        assert_ok(&run, shell);
        assert!(run.stdout.len() > 200, "{shell}: {run}");
        assert!(run.stdout.contains("record"), "{shell}: {run}");
        assert!(run.stdout.contains("--fail-on"), "{shell}: {run}");
    }
}

#[test]
fn unknown_shell_is_a_usage_error_naming_the_shells() {
    let run = gilscope(["completions", "tcsh"]);
    assert_eq!(run.code, Some(2), "{run}");
    for word in ["tcsh", "bash", "zsh", "fish", "powershell"] {
        assert!(run.stderr.contains(word), "no {word} in {run}");
    }
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn every_subcommand_help_ends_with_worked_examples() {
    for sub in subcommands() {
        let run = gilscope([sub.as_str(), "--help"]);
        assert_ok(&run, &sub);
        let help = &run.stdout;
        let examples = help
            .find("\nExamples:\n")
            .unwrap_or_else(|| panic!("`gilscope {sub} --help` has no examples:\n{help}"));
        let options = help.find("\nOptions:\n").expect("an Options section");
        assert!(
            options < examples,
            "{sub}: examples before options:\n{help}"
        );
        let prefix = format!("gilscope {sub}");
        assert!(
            help[examples..]
                .lines()
                .any(|line| line.trim_start().starts_with(&prefix)),
            "`gilscope {sub} --help` has no `{prefix} ...` example:\n{help}"
        );
    }
}

#[test]
fn record_examples_cover_pid_script_and_ci() {
    let help = gilscope(["record", "--help"]).stdout;
    for example in [
        "gilscope record --pid 1234 --duration 30",
        "gilscope record -- python app.py",
        "--fail-on 'gil.contended>0.3'",
    ] {
        assert!(help.contains(example), "no {example:?} in:\n{help}");
    }
    let help = gilscope(["report", "--help"]).stdout;
    assert!(help.contains("gilscope report gilscope-1234\n"), "{help}");
}

#[test]
fn top_level_help_lists_exit_codes_and_the_man_page() {
    let run = gilscope(["--help"]);
    assert_ok(&run, "gilscope --help");
    for text in [
        "Exit codes:",
        "3   no such process",
        "gilscope man",
        "completions",
    ] {
        assert!(run.stdout.contains(text), "no {text:?} in:\n{}", run.stdout);
    }
}

#[test]
fn man_page_has_a_header_and_every_subcommand() {
    let run = gilscope(["man"]);
    assert_ok(&run, "gilscope man");
    let page = &run.stdout;
    assert!(
        page.starts_with(".TH gilscope 1 "),
        "{}",
        support::truncate(page, 500)
    );
    assert!(page.contains(&format!("gilscope {VERSION}")));
    for sub in subcommands().iter().filter(|s| *s != "man") {
        let header = format!(".SH \"GILSCOPE {}\"", sub.to_uppercase());
        assert!(page.contains(&header), "no {header} in the man page");
        assert!(
            page.contains(&format!("gilscope {sub}")),
            "no `gilscope {sub}`"
        );
    }
    assert!(page.contains(".SH \"EXIT STATUS\""));
    // groff (man's formatter) must take it without a warning, where it is installed.
    if Path::new("/usr/bin/groff").is_file() {
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gilscope.1");
        fs::write(&file, page).unwrap();
        let mut cmd = Command::new("/usr/bin/groff");
        cmd.args(["-man", "-Tutf8", "-ww", "-z"]).arg(&file);
        let run = run_command(cmd, support::COMMAND_TIMEOUT);
        assert_ok(&run, "groff");
        assert!(run.stderr.is_empty(), "groff warns: {run}");
    }
}

// ---------------------------------------------------------------------------------------
// The wheel

/// How long building the wheel may take: the first build compiles every dependency in
/// release mode in its own target directory.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Creating a venv and installing maturin from PyPI.
const PIP_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Builds the wheel from the checkout the way `pip install .` does (pip calls maturin
/// through pyproject.toml), installs it into a new venv, and runs the installed command.
///
/// Reused between runs, under target/: the venv holding maturin (target/test-venv) and
/// maturin's cargo target directory (target/wheel-build). The wheel is built in a target
/// directory of its own because cargo releases its lock while tests run: a build in
/// target/ would relink target/release/gilscope under the tests running it.
#[test]
fn wheel_installs_the_gilscope_command() {
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .to_path_buf();
    // Another `cargo test` may run this test at the same time: one at a time.
    let lock = File::create(target.join("install-test.lock")).unwrap();
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();

    let tools = tool_venv(&target.join("test-venv"));
    let scratch = target.join("install-test");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).unwrap();
    }
    let dist = scratch.join("dist");

    // `pip wheel .` runs the same PEP 517 build as `pip install .`; no build isolation,
    // so maturin comes from the tool venv and nothing is downloaded.
    let mut cmd = Command::new(tools.join("bin/python"));
    cmd.args([
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
    ])
    .arg(&dist)
    .arg(root)
    .env("PATH", path_with(&tools.join("bin")))
    .env("CARGO_TARGET_DIR", target.join("wheel-build"));
    assert_ok(&run_command(cmd, BUILD_TIMEOUT), "pip wheel .");
    let wheel = only_wheel(&dist);
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("gilscope-{VERSION}-py3-none-")) && name.contains("x86_64"),
        "unexpected wheel name {name}"
    );

    // A scratch venv, as a user's project would have.
    let venv = scratch.join("venv");
    let mut cmd = Command::new(python());
    cmd.args(["-m", "venv"]).arg(&venv);
    assert_ok(&run_command(cmd, PIP_TIMEOUT), "python -m venv");
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "pip", "install", "--no-index", "--no-deps"])
        .arg(&wheel);
    assert_ok(&run_command(cmd, PIP_TIMEOUT), "pip install the wheel");

    let installed = venv.join("bin/gilscope");
    let head = fs::read(&installed).unwrap_or_else(|e| panic!("{}: {e}", installed.display()));
    assert!(
        head.starts_with(b"\x7fELF"),
        "bin/gilscope is not the native binary"
    );
    let mut cmd = Command::new(&installed);
    cmd.arg("--version");
    let run = run_command(cmd, support::COMMAND_TIMEOUT);
    assert_ok(&run, "installed gilscope --version");
    assert_eq!(run.stdout.trim(), format!("gilscope {VERSION}"));
    let mut cmd = Command::new(&installed);
    cmd.args(["dump", "--help"]);
    let run = run_command(cmd, support::COMMAND_TIMEOUT);
    assert_ok(&run, "installed gilscope dump --help");
    assert!(
        run.stdout.contains("gilscope dump --pid 1234 --json"),
        "{run}"
    );

    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "pip", "show", "gilscope"]);
    let run = run_command(cmd, PIP_TIMEOUT);
    assert_ok(&run, "pip show gilscope");
    assert!(
        run.stdout.contains(&format!("Version: {VERSION}\n")),
        "{run}"
    );
    assert!(run.stdout.contains("License: MIT"), "{run}");

    // And pip takes it away again.
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "pip", "uninstall", "--yes", "gilscope"]);
    assert_ok(&run_command(cmd, PIP_TIMEOUT), "pip uninstall gilscope");
    assert!(!installed.exists(), "pip uninstall left bin/gilscope");
    eprintln!("wheel built, installed and run in {:?}", started.elapsed());
}

/// The interpreter the venvs are made from: the first the live tests use, else Debian's.
fn python() -> PathBuf {
    support::discover_python_paths()
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// A venv with maturin in it, created (maturin from PyPI) unless a working one is there.
fn tool_venv(dir: &Path) -> PathBuf {
    let maturin = dir.join("bin/maturin");
    if maturin.is_file() {
        let mut cmd = Command::new(&maturin);
        cmd.arg("--version");
        if run_command(cmd, support::COMMAND_TIMEOUT).code == Some(0) {
            return dir.to_path_buf();
        }
    }
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    let mut cmd = Command::new(python());
    cmd.args(["-m", "venv"]).arg(dir);
    assert_ok(&run_command(cmd, PIP_TIMEOUT), "python -m venv (tools)");
    let mut cmd = Command::new(dir.join("bin/python"));
    cmd.args(["-m", "pip", "install", "--quiet", "maturin>=1,<2"]);
    assert_ok(&run_command(cmd, PIP_TIMEOUT), "pip install maturin");
    dir.to_path_buf()
}

/// `$PATH` with `dir` first (pip's build backend runs `maturin` from the PATH).
fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).expect("PATH entries without ':'")
}

fn only_wheel(dist: &Path) -> PathBuf {
    let wheels: Vec<PathBuf> = fs::read_dir(dist)
        .unwrap_or_else(|e| panic!("{}: {e}", dist.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .collect();
    assert_eq!(
        wheels.len(),
        1,
        "expected one wheel in {}: {wheels:?}",
        dist.display()
    );
    wheels.into_iter().next().unwrap()
}
