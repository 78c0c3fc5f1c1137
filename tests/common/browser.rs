//! Headless Chromium (Debian's `chromium`, `make browser-tools`) for tests of what a person
//! sees: a page's DOM after its scripts ran, and screenshots. Each run has a fresh profile and
//! the flags that keep it off the network (no background fetches, updates or sync).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{unique, CAP};

/// Where Debian's package puts it; env `KTRANSFORM_CHROMIUM` names another.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The browser; None, with the reason printed, when it is not installed and this is not CI.
/// Under `CI=true` a missing browser fails the test: CI installs it (`make browser-tools`).
pub fn chromium() -> Option<PathBuf> {
    let path =
        std::env::var_os("KTRANSFORM_CHROMIUM").map_or(PathBuf::from(CHROMIUM), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is not installed (`make browser-tools` installs Debian's chromium)",
        path.display()
    );
    assert!(
        std::env::var("CI").map_or(true, |ci| ci != "true"),
        "{why}; CI must run the browser tests"
    );
    eprintln!("skipping the browser checks: {why}");
    None
}

/// Runs the browser on `url` with `args`, for at most [`CAP`]; its stdout.
fn run(chromium: &Path, url: &str, args: &[String]) -> String {
    let profile = std::env::temp_dir().join(unique("ktransform-chromium"));
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if started.elapsed() >= CAP {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&profile);
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("chromium on {url} failed: {s}"),
        None => panic!("chromium on {url} did not finish within {CAP:?} and was killed"),
    }
}

/// The DOM of `url` once its scripts have run for `budget` of the page's (virtual) time.
/// Blocking.
pub fn dom(chromium: &Path, url: &str, budget: Duration) -> String {
    run(
        chromium,
        url,
        &[
            format!("--virtual-time-budget={}", budget.as_millis()),
            "--dump-dom".into(),
        ],
    )
}

/// A PNG of `url` in a `width`×`height` window, once its scripts have run for `budget`.
/// Blocking.
pub fn screenshot(
    chromium: &Path,
    url: &str,
    to: &Path,
    (width, height): (u32, u32),
    budget: Duration,
) {
    run(
        chromium,
        url,
        &[
            format!("--virtual-time-budget={}", budget.as_millis()),
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", to.display()),
        ],
    );
    assert!(
        to.exists(),
        "chromium wrote no screenshot to {}",
        to.display()
    );
}

/// The markup of the element with `id`, from its tag up to the first `end` after it (`</p>`,
/// `</table>`...); panics naming the id when there is none.
pub fn element<'a>(dom: &'a str, id: &str, end: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap_or(at);
    let stop = dom[at..]
        .find(end)
        .map_or(dom.len(), |i| at + i + end.len());
    &dom[start..stop]
}

/// The text of markup, tags removed and entities `&amp;`, `&lt;`, `&gt;` and `&quot;` read.
pub fn text(markup: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in markup.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}
