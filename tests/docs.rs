//! The documents stay true to the code, without a broker:
//!
//! - the CLI reference (`docs/configuration.md`) lists exactly the flags each command has
//!   (`ktransform::cli::Cli`, as `ktransform <command> --help` prints them), with their
//!   environment variables and defaults;
//! - every relative link in README.md and docs/*.md names a file that exists (and, into a
//!   markdown file, a heading that exists);
//! - README.md stays short and maps every document in docs/.
//!
//! The CLI reference's format: a heading that names commands in code spans (`` `ktransform run` ``,
//! one or several) owns the tables under it, up to the next heading. The first column of such a
//! table is the flag in a code span (`` `--brokers` ``, `` `-X key=value` ``); an `env` column holds
//! the environment variable in a code span, or nothing; a `default` column holds clap's default in
//! a code span when there is one (anything else is free text: "number of CPUs", "required").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use ktransform::cli::Cli;

const CLI_REFERENCE: &str = "docs/configuration.md";
const README_MAX_LINES: usize = 150;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// README.md and every markdown file in docs/, relative to the repository root.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            p.strip_prefix(root())
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    docs.insert(0, PathBuf::from("README.md"));
    docs
}

/// A markdown line outside fenced code blocks, with its 1-based number.
struct Line<'a> {
    number: usize,
    text: &'a str,
}

fn prose_lines(text: &str) -> Vec<Line<'_>> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for (i, text) in text.lines().enumerate() {
        if text.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            out.push(Line {
                number: i + 1,
                text,
            });
        }
    }
    out
}

/// The contents of the inline code spans of `s`, in order.
fn code_spans(s: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        let body = &rest[start + ticks..];
        match body.find(fence) {
            Some(end) => {
                spans.push(body[..end].trim());
                rest = &body[end + ticks..];
            }
            None => break,
        }
    }
    spans
}

/// `s` with its inline code spans removed (links inside code are not links).
fn without_code(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = &rest[start..start + ticks];
        out.push_str(&rest[..start]);
        let body = &rest[start + ticks..];
        match body.find(fence) {
            Some(end) => rest = &body[end + ticks..],
            None => {
                rest = body;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The cells of a table row, split on `|` outside code spans.
fn cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut cells = vec![String::new()];
    let mut in_code = false;
    for c in row.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                cells.last_mut().unwrap().push(c);
            }
            '|' if !in_code => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

fn heading(text: &str) -> Option<&str> {
    let hashes = text.chars().take_while(|&c| c == '#').count();
    (1..=6)
        .contains(&hashes)
        .then(|| text[hashes..].strip_prefix(' '))
        .flatten()
        .map(str::trim)
}

// ---------------------------------------------------------------------------------------------
// The CLI reference

/// One flag of one command, as the reference documents it.
#[derive(Debug, Clone)]
struct DocFlag {
    env: Option<String>,
    default: Option<String>,
    line: usize,
}

/// Documented flags per command, and the problems found while reading them.
fn documented_flags(text: &str) -> (BTreeMap<String, BTreeMap<String, DocFlag>>, Vec<String>) {
    let mut flags: BTreeMap<String, BTreeMap<String, DocFlag>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut commands: Vec<String> = Vec::new();
    // Column indexes of `env` and `default` in the current table, once its header is read.
    let mut table: Option<(Option<usize>, Option<usize>)> = None;
    for Line { number, text } in prose_lines(text) {
        if let Some(h) = heading(text) {
            commands = code_spans(h)
                .into_iter()
                .filter_map(|s| s.strip_prefix("ktransform "))
                .filter(|c| !c.is_empty() && !c.contains(char::is_whitespace))
                .map(str::to_string)
                .collect();
            for c in &commands {
                flags.entry(c.clone()).or_default();
            }
            table = None;
            continue;
        }
        if !text.trim_start().starts_with('|') {
            table = None;
            continue;
        }
        if commands.is_empty() {
            continue;
        }
        let row = cells(text);
        let Some((env_col, default_col)) = table else {
            let find = |name: &str| row.iter().position(|c| c.eq_ignore_ascii_case(name));
            table = Some((find("env"), find("default")));
            continue;
        };
        if row
            .iter()
            .all(|c| c.chars().all(|c| matches!(c, '-' | ':')))
        {
            continue; // the separator row
        }
        let flag = code_spans(&row[0])
            .first()
            .and_then(|s| s.split_whitespace().next())
            .filter(|f| f.starts_with('-'))
            .map(str::to_string);
        let Some(flag) = flag else {
            problems.push(format!(
                "{CLI_REFERENCE}:{number}: a row of a flag table without a flag in its first column: {text}"
            ));
            continue;
        };
        let cell = |col: Option<usize>| col.map(|i| row.get(i).cloned().unwrap_or_default());
        let doc = DocFlag {
            env: cell(env_col),
            default: cell(default_col),
            line: number,
        };
        for command in &commands {
            if let Some(earlier) = flags
                .entry(command.clone())
                .or_default()
                .insert(flag.clone(), doc.clone())
            {
                problems.push(format!(
                    "{CLI_REFERENCE}:{number}: `{flag}` of `ktransform {command}` is documented twice (also line {})",
                    earlier.line
                ));
            }
        }
    }
    (flags, problems)
}

/// One flag of one command, as clap has it.
struct CodeFlag {
    env: Option<String>,
    defaults: Vec<String>,
    takes_values: bool,
    required: bool,
}

fn code_flags() -> BTreeMap<String, BTreeMap<String, CodeFlag>> {
    let cli = Cli::command();
    let mut out = BTreeMap::new();
    for sub in cli.get_subcommands() {
        let mut flags = BTreeMap::new();
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(long), _) => format!("--{long}"),
                (None, Some(short)) => format!("-{short}"),
                (None, None) => format!("<{}>", id.to_ascii_uppercase()),
            };
            flags.insert(
                name,
                CodeFlag {
                    env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                    defaults: arg
                        .get_default_values()
                        .iter()
                        .map(|v| v.to_string_lossy().into_owned())
                        .collect(),
                    takes_values: arg.get_action().takes_values(),
                    required: arg.is_required_set(),
                },
            );
        }
        out.insert(sub.get_name().to_string(), flags);
    }
    out
}

#[test]
fn cli_reference_lists_every_flag_and_only_flags_that_exist() {
    let text = read(&root().join(CLI_REFERENCE));
    let (documented, mut problems) = documented_flags(&text);
    let code = code_flags();

    let doc_commands: BTreeSet<&String> = documented.keys().collect();
    let code_commands: BTreeSet<&String> = code.keys().collect();
    for c in code_commands.difference(&doc_commands) {
        problems.push(format!(
            "{CLI_REFERENCE}: `ktransform {c}` has no section (a heading naming `ktransform {c}`)"
        ));
    }
    for c in doc_commands.difference(&code_commands) {
        problems.push(format!(
            "{CLI_REFERENCE}: documents `ktransform {c}`, which is no command"
        ));
    }

    for (command, flags) in &code {
        let Some(docs) = documented.get(command) else {
            continue;
        };
        for (name, flag) in flags {
            let Some(doc) = docs.get(name) else {
                problems.push(format!(
                    "{CLI_REFERENCE}: `ktransform {command} {name}` is not documented"
                ));
                continue;
            };
            let at = format!(
                "{CLI_REFERENCE}:{}: `ktransform {command} {name}`",
                doc.line
            );
            if let Some(env_cell) = &doc.env {
                let shown: Vec<&str> = code_spans(env_cell);
                let expected: Vec<&str> = flag.env.as_deref().into_iter().collect();
                if shown != expected {
                    problems.push(format!(
                        "{at}: env column shows {shown:?}, the code has {expected:?}"
                    ));
                }
            }
            if let Some(default_cell) = &doc.default {
                let shown = code_spans(default_cell);
                if flag.takes_values {
                    for d in &flag.defaults {
                        if !shown.contains(&d.as_str()) {
                            problems.push(format!(
                                "{at}: default column shows {shown:?}, the code's default is `{d}`"
                            ));
                        }
                    }
                }
                if flag.required && !default_cell.contains("required") {
                    problems.push(format!(
                        "{at}: the flag is required; the default column should say so"
                    ));
                }
            }
        }
        for name in docs.keys() {
            if !flags.contains_key(name) {
                problems.push(format!(
                    "{CLI_REFERENCE}:{}: documents `ktransform {command} {name}`, which does not exist",
                    docs[name].line
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the CLI reference and the code disagree:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Links

/// GitHub's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings, with `-1`, `-2` … for repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose_lines(text) {
        if let Some(h) = heading(line.text) {
            let base = slug(h);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
    }
    out
}

/// The targets of the inline links and images `[text](target)` of a markdown text, by line.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for Line { number, text } in prose_lines(text) {
        let text = without_code(text);
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            out.push((number, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = read(&root().join(&doc));
        let dir = doc.parent().unwrap_or(Path::new(""));
        for (line, target) in link_targets(&text) {
            let at = format!("{}:{line}: ({target})", doc.display());
            if target.is_empty() {
                problems.push(format!("{at}: empty link"));
                continue;
            }
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                root().join(&doc)
            } else {
                root().join(dir).join(path)
            };
            checked += 1;
            if !file.exists() {
                problems.push(format!("{at}: {} does not exist", file.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                if file.extension().is_some_and(|e| e == "md") {
                    let known = anchors(&read(&file));
                    if !known.contains(anchor) {
                        problems.push(format!(
                            "{at}: no heading `#{anchor}` in {}; it has {known:?}",
                            file.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 0, "no relative link found: is the parser broken?");
    assert!(
        problems.is_empty(),
        "broken links:\n  {}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The front page

#[test]
fn readme_is_short_and_maps_every_document() {
    let text = read(&root().join("README.md"));
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move the detail to a document \
         in docs/ and link it"
    );
    let targets: BTreeSet<String> = link_targets(&text).into_iter().map(|(_, t)| t).collect();
    let unmapped: Vec<String> = documents()
        .into_iter()
        .skip(1) // README.md itself
        .map(|d| d.display().to_string())
        .filter(|d| !targets.contains(d))
        .collect();
    assert!(
        unmapped.is_empty(),
        "README.md's map of docs/ does not link {unmapped:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The parsers themselves

#[test]
fn parsers_read_what_the_documents_use() {
    assert_eq!(
        code_spans("`--a` and ``b`c`` `-X k=v`"),
        ["--a", "b`c", "-X k=v"]
    );
    assert_eq!(
        cells("| `a|b` | c |  |"),
        ["`a|b`".to_string(), "c".into(), "".into()]
    );
    assert_eq!(
        slug("Exactly-once (`--guarantee exactly-once`)"),
        "exactly-once---guarantee-exactly-once"
    );
    assert_eq!(
        slug("Scaling: partitions and instances"),
        "scaling-partitions-and-instances"
    );
    assert_eq!(
        link_targets("see [a](x.md#y) and ![b](../c.png \"t\"), not `[c](d)`"),
        [(1, "x.md#y".to_string()), (1, "../c.png".to_string())]
    );
    let (flags, problems) = documented_flags(
        "## `ktransform run`, `ktransform lag`\n\n| flag | env | default |\n|---|---|---|\n\
         | `--a` | `KTRANSFORM_A` | `1` |\n\n## Other\n\n| `--not-a-flag` | |\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(flags.len(), 2);
    assert_eq!(flags["lag"]["--a"].env.as_deref(), Some("`KTRANSFORM_A`"));
    assert_eq!(flags["run"]["--a"].default.as_deref(), Some("`1`"));
}
