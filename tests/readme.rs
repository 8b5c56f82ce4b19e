//! The documentation's commands, checked against the code:
//! - README's 5-minute tour (the fenced `sh` blocks of its section "A 5-minute tour") runs as
//!   written, from the repository's root, in a state directory of its own; the commands that
//!   need a terminal or are benchmarks (timing, minutes, root) are only parsed;
//! - every `lego ...` command line in README.md and `docs/*.md` (code blocks and inline code)
//!   names subcommands that exist and options that `lego ... --help` lists;
//! - every repository path those pages name (`lego-vmm/src/cpu.rs`) exists, and every relative
//!   link and anchor between them resolves.
//!
//! Without `/dev/kvm` the tour fails with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lego_testkit as common;
use lego_testkit::repo;

/// How long one command of the tour may take before the test calls it a hang.
const LIMIT: Duration = Duration::from_secs(120);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The markdown files whose commands are checked: README.md and every page of `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of the fenced `sh` blocks of README's section `## A 5-minute tour`.
fn tour(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## A 5-minute tour")
        .expect("README has a section `## A 5-minute tour`");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        match (in_block, line.trim()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, l) if !l.is_empty() && !l.starts_with('#') => commands.push(l.to_string()),
            _ => {}
        }
    }
    commands
}

/// Every text in a markdown page that may hold a command: each line of its code blocks
/// (fenced or indented; an indented line that starts with `[`, `|` or a capital continues the
/// line before, as in a synopsis), and each inline code span of the prose (which may wrap).
fn code_texts(page: &str) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    let mut prose = String::new();
    let mut fenced = false;
    let mut previous_code = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            previous_code = false;
            continue;
        }
        let indented = line.starts_with("    ") && !line.trim_start().starts_with("- ");
        if fenced || indented {
            let l = line.trim();
            let continues = l.starts_with('[')
                || l.starts_with('|')
                || l.starts_with(|c: char| c.is_ascii_uppercase());
            match texts.last_mut() {
                Some(last) if previous_code && continues => {
                    last.push(' ');
                    last.push_str(l);
                }
                _ => texts.push(l.to_string()),
            }
            previous_code = true;
        } else {
            prose.push_str(line);
            prose.push(' ');
            previous_code = false;
        }
    }
    texts.extend(prose.split('`').skip(1).step_by(2).map(str::to_string));
    texts
}

/// The `lego` command lines of a text: each part between `&&`, `;`, `|` and `#` that starts
/// with `lego `, `target/release/lego ` or `$ target/release/lego `, as its words after `lego`.
fn lego_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    for part in words.split(|w| matches!(*w, "&&" | ";" | "|" | "||" | "#" | "$")) {
        if let [first, rest @ ..] = part {
            if matches!(*first, "lego" | "target/release/lego") {
                commands.push(rest.iter().map(|w| w.to_string()).collect());
            }
        }
    }
    commands
}

/// `lego PATH --help`, cached.
struct Help {
    texts: HashMap<Vec<String>, String>,
}

impl Help {
    fn of(&mut self, path: &[String]) -> &str {
        self.texts.entry(path.to_vec()).or_insert_with(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_lego"))
                .args(path)
                .arg("--help")
                .output()
                .expect("running lego --help");
            assert!(
                out.status.success(),
                "lego {} --help: {}",
                path.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }

    /// The subcommands `lego PATH --help` lists (its `Commands:` section).
    fn subcommands(&mut self, path: &[String]) -> Vec<String> {
        let help = self.of(path);
        let Some(start) = help.find("\nCommands:\n") else {
            return Vec::new();
        };
        help[start + 11..]
            .lines()
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Whether `lego PATH --help` names option `flag` (or has it as a visible alias).
    fn has_flag(&mut self, path: &[String], flag: &str) -> bool {
        let help = self.of(path);
        help.match_indices(flag).any(|(i, _)| {
            let after = help[i + flag.len()..].chars().next();
            !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    }
}

/// What is wrong with one command line (its words after `lego`): a subcommand that does not
/// exist, or an option its `--help` does not list.
fn check(words: &[String], help: &mut Help) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    let mut rest = words;
    while let [word, tail @ ..] = rest {
        let subcommands = help.subcommands(&path);
        if subcommands.is_empty() || word.starts_with('-') {
            break;
        }
        // Output that a command prints (`lego bench fault: 16384 pages ...`) is no command.
        if word.ends_with(':') {
            return Vec::new();
        }
        // A placeholder (`lego COMMAND --help`, `lego ... --help`) names no subcommand to check.
        if word == "..." || word.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            return Vec::new();
        }
        // A synopsis names alternatives: `lego bench syscall|fault|...`.
        let alternatives: Vec<&str> = word.split('|').collect();
        let unknown: Vec<&&str> = alternatives
            .iter()
            .filter(|a| !subcommands.iter().any(|s| s == *a))
            .collect();
        if !unknown.is_empty() {
            return vec![format!(
                "`lego {}`: no subcommand {unknown:?}",
                [path.clone(), vec![word.clone()]].concat().join(" ")
            )];
        }
        if alternatives.len() > 1 {
            return alternatives
                .iter()
                .flat_map(|a| {
                    check(
                        &[path.clone(), vec![a.to_string()], tail.to_vec()].concat(),
                        help,
                    )
                })
                .collect();
        }
        path.push(word.clone());
        rest = tail;
    }
    let mut problems = Vec::new();
    for word in rest {
        let Some(start) = word.find("--") else {
            continue;
        };
        let flag: String = word[start..]
            .chars()
            .enumerate()
            .take_while(|&(i, c)| i < 2 || c.is_ascii_alphanumeric() || c == '-')
            .map(|(_, c)| c)
            .collect();
        if flag.len() > 2 && !help.has_flag(&path, &flag) {
            problems.push(format!("`lego {}` has no option {flag}", path.join(" ")));
        }
    }
    problems
}

#[test]
fn every_lego_command_in_readme_and_docs_names_existing_subcommands_and_options() {
    let mut help = Help {
        texts: HashMap::new(),
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages() {
        for text in code_texts(&read(&page)) {
            for command in lego_commands(&text) {
                checked += 1;
                for p in check(&command, &mut help) {
                    problems.push(format!(
                        "{}: {p} (in `{text}`)",
                        page.strip_prefix(repo()).unwrap_or(&page).display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} lego command lines found in README.md and docs/: is the parsing broken?"
    );
    assert!(
        problems.is_empty(),
        "{} stale command line(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_a_missing_subcommand_and_a_missing_option() {
    let mut help = Help {
        texts: HashMap::new(),
    };
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert!(check(&words("run --stats --excache 4M PROG"), &mut help).is_empty());
    assert!(check(
        &words("vnode create demo [--disk SIZE] [--publish HOSTPORT:VPORT]..."),
        &mut help
    )
    .is_empty());
    assert!(check(&words("bench syscall|fault|check"), &mut help).is_empty());
    assert_eq!(
        check(&words("run --no-such-option PROG"), &mut help).len(),
        1
    );
    assert_eq!(check(&words("bench fault|nothing"), &mut help).len(), 1);
    assert_eq!(check(&words("frobnicate --x"), &mut help).len(), 1);
    assert!(
        check(&words("COMMAND --help"), &mut help).is_empty(),
        "a placeholder"
    );
    let synopsis =
        "    lego run [--vnode NAME]\n             [--bogus-flag N]\n             PROGRAM\n";
    let commands: Vec<Vec<String>> = code_texts(synopsis)
        .iter()
        .flat_map(|t| lego_commands(t))
        .collect();
    assert_eq!(
        commands.len(),
        1,
        "a synopsis's continuation lines are one command"
    );
    assert_eq!(check(&commands[0], &mut help).len(), 1);
    assert_eq!(
        lego_commands("make guest-images && lego image push DIR --vnode demo").len(),
        1
    );
}

/// The top-level directories of the repository: an inline code span that starts with one of
/// them names a file or directory of the repository.
const TOP: &[&str] = &[
    "cli/",
    "docs/",
    "global-mgr/",
    "guest-images/",
    "lego-vmm/",
    "mem-server/",
    "proto/",
    "scripts/",
    "storage-server/",
    "tests/",
];

/// The repository path an inline code span names, if it names one: `lego-vmm/src/cpu.rs`, or
/// `mem-server/src/placement.rs::choose_owner` (an item in it); not a glob or a command line.
fn repo_path(span: &str) -> Option<&str> {
    let path = span.split("::").next()?;
    let named = TOP.iter().any(|t| path.starts_with(t)) && !path.contains(['*', ' ', '<', '{']);
    named.then_some(path)
}

#[test]
fn every_repository_path_in_readme_and_docs_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let texts = code_texts(&read(&page));
        for span in texts.iter().filter_map(|t| repo_path(t)) {
            checked += 1;
            if !repo().join(span).exists() {
                missing.push(format!(
                    "{}: {span}",
                    page.strip_prefix(repo()).unwrap_or(&page).display()
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is the parsing broken?"
    );
    assert!(
        missing.is_empty(),
        "paths named in the documentation that do not exist:\n{}",
        missing.join("\n")
    );
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_relative_link_in_readme_and_docs_reaches_its_file_and_heading() {
    let anchors = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| slug(l.trim_start_matches('#')))
            .collect()
    };
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        for link in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            if link.starts_with("http") || link.contains(char::is_whitespace) {
                continue;
            }
            checked += 1;
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("a directory").join(file)
            };
            if !target.exists() {
                broken.push(format!(
                    "{}: {link}: no file {}",
                    page.display(),
                    target.display()
                ));
            } else if !anchor.is_empty() && !anchors(&read(&target)).iter().any(|a| a == anchor) {
                broken.push(format!(
                    "{}: {link}: no heading with that anchor",
                    page.display()
                ));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parsing broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug(" A forwarded system call: `lego bench syscall`"),
        "a-forwarded-system-call-lego-bench-syscall"
    );
    assert_eq!(
        slug("Where a vNode's memory lives"),
        "where-a-vnodes-memory-lives"
    );
}

#[test]
fn repository_paths_are_told_from_other_code() {
    assert_eq!(
        repo_path("mem-server/src/placement.rs::choose_owner"),
        Some("mem-server/src/placement.rs")
    );
    assert_eq!(
        repo_path("lego-vmm/src/syscall/"),
        Some("lego-vmm/src/syscall/")
    );
    assert_eq!(repo_path("tests/*.rs"), None);
    assert_eq!(repo_path("lego run --stats"), None);
    assert_eq!(repo_path("/proc/self"), None);
}

/// Stops the tour's cluster when dropped, so a failing test leaves no processes behind.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_lego"))
            .arg("down")
            .env("LEGO_STATE_DIR", self.0)
            .output();
    }
}

#[test]
fn readme_tour_runs_as_written() {
    let commands = tour(&read(&repo().join("README.md")));
    for needed in [
        "lego run ",
        "lego up",
        "lego ps",
        "lego top",
        "lego bench apps",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(needed)),
            "README's tour has no `{needed}`: {commands:?}"
        );
    }
    if !common::kvm() {
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_lego"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let state = tempfile::tempdir().expect("state directory");
    let _down = Down(state.path());
    let mut ran = 0;
    for command in &commands {
        // The test puts the binary on PATH itself; a terminal UI and benchmarks are not tests.
        if command.starts_with("export PATH=")
            || command.starts_with("lego top")
            || command.starts_with("lego bench ")
        {
            continue;
        }
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(command)
            .current_dir(repo())
            .env("PATH", &path)
            .env("LEGO_STATE_DIR", state.path());
        let r = common::run(c, LIMIT, command);
        assert_eq!(
            r.status,
            Some(0),
            "`{command}` failed:\n{}\n{}",
            r.stdout,
            r.stderr
        );
        ran += 1;
        if command == "lego up" {
            // The tour goes on at once; the test waits until every component has registered,
            // so that a loaded machine cannot make the next command race the cluster's start.
            let ps = || {
                Command::new(env!("CARGO_BIN_EXE_lego"))
                    .args(["ps", "--json"])
                    .env("LEGO_STATE_DIR", state.path())
                    .output()
            };
            common::poll(
                "the cluster's components up",
                Duration::from_secs(60),
                || {
                    let out = ps().map_err(|e| e.to_string())?;
                    let (components, _) = common::ps_json(&out);
                    match components.iter().filter(|c| c.up).count() {
                        4.. => Ok(()),
                        n => Err(format!("{n} of 4 up")),
                    }
                },
            );
        }
        if command.starts_with("lego run --vnode demo /bin/busybox wc -l /data/lines.txt") {
            let lines = read(&repo().join("guest-images/out/image/data/lines.txt"))
                .lines()
                .count();
            assert_eq!(
                r.stdout.trim(),
                format!("{lines} /data/lines.txt"),
                "what the image holds"
            );
        }
    }
    assert!(ran >= 8, "only {ran} commands of the tour ran");
}
