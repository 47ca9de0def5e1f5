//! `sluice-hugepages`: show hugepage pools and hugetlbfs mounts, reserve pages, mount
//! hugetlbfs.
//!
//! Exit codes: 0 success; 1 failure; 2 bad usage (from clap); 3 the kernel granted fewer
//! pages than requested (what it did grant is printed; `--mount` happens first);
//! 77 permission denied (run as root), as `EX_NOPERM` in sysexits.h.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sluice_hugepages::{HugepageError, HugepageStatus, PageSize, mount_hugetlbfs, reserve};

/// Inspect and reserve hugepages for Sluice.
#[derive(Debug, Parser)]
#[command(name = "sluice-hugepages", version, about)]
struct Opt {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show each hugepage pool (total, free, reserved, surplus) and the hugetlbfs mounts.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Optionally mount hugetlbfs, then grow the pool of SIZE pages to at least COUNT pages
    /// (never shrinks it) and report what the kernel granted. Needs root.
    Reserve {
        /// Pages wanted in the pool.
        count: u64,
        /// Page size, e.g. 2M or 1G. Default: the kernel's default hugepage size.
        #[arg(long)]
        size: Option<PageSize>,
        /// Also mount hugetlbfs with that page size here (created if missing; a no-op when
        /// already mounted), e.g. /dev/hugepages.
        #[arg(long)]
        mount: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A readable table.
    Table,
    /// One JSON object.
    Json,
}

const EXIT_FAILURE: u8 = 1;
const EXIT_PARTIAL: u8 = 3;
const EXIT_NOPERM: u8 = 77;

fn main() -> ExitCode {
    let opt = Opt::parse();
    match run(opt) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-hugepages: error: {e}");
            ExitCode::from(if e.is_permission_denied() {
                EXIT_NOPERM
            } else {
                EXIT_FAILURE
            })
        }
    }
}

fn run(opt: Opt) -> Result<ExitCode, HugepageError> {
    match opt.command {
        Command::Status { output } => {
            let status = HugepageStatus::read()?;
            match output {
                Output::Table => print!("{}", table(&status)),
                Output::Json => println!("{}", json(&status)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reserve { count, size, mount } => {
            let size = match size {
                Some(size) => size,
                None => HugepageStatus::read()?.default_page_size().ok_or_else(|| {
                    HugepageError::Parse {
                        what: "/proc/meminfo".to_owned(),
                        text: String::new(),
                        reason: "no Hugepagesize line: this kernel has no hugetlb support",
                    }
                })?,
            };
            // Mount first: it needs no pages, and a refused mount point then leaves the pool
            // untouched.
            if let Some(dir) = mount {
                let m = mount_hugetlbfs(&dir, size)?;
                println!(
                    "hugetlbfs ({}) mounted at {}",
                    m.page_size,
                    m.path.display()
                );
            }
            let r = reserve(size, count)?;
            println!(
                "{} pool: requested {} pages, granted {} (was {}), {} free",
                r.page_size, r.requested, r.granted, r.before, r.free
            );
            if r.is_complete() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "sluice-hugepages: error: the kernel granted only {} of {} {} pages",
                    r.granted, r.requested, r.page_size
                );
                Ok(ExitCode::from(EXIT_PARTIAL))
            }
        }
    }
}

fn table(status: &HugepageStatus) -> String {
    let mut out = String::new();
    let default = status
        .default_page_size()
        .map_or_else(|| "none".to_owned(), |p| p.to_string());
    let _ = writeln!(out, "default hugepage size: {default}");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<6} {:>8} {:>8} {:>9} {:>8} {:>11} {:>10}",
        "SIZE", "TOTAL", "FREE", "RESERVED", "SURPLUS", "OVERCOMMIT", "AVAILABLE"
    );
    if status.pools.is_empty() {
        let _ = writeln!(out, "(no hugepage pools: kernel without hugetlb)");
    }
    for p in &status.pools {
        let _ = writeln!(
            out,
            "{:<6} {:>8} {:>8} {:>9} {:>8} {:>11} {:>10}",
            p.page_size.to_string(),
            p.total,
            p.free,
            p.reserved,
            p.surplus,
            p.overcommit,
            p.available()
        );
    }
    let _ = writeln!(out);
    if status.mounts.is_empty() {
        let _ = writeln!(out, "hugetlbfs mounts: none");
        return out;
    }
    let width = status
        .mounts
        .iter()
        .map(|m| m.path.display().to_string().len())
        .max()
        .unwrap_or(0);
    let width = width.max("MOUNT".len());
    let _ = writeln!(out, "{:<width$}  {:<9}  MODE", "MOUNT", "PAGE SIZE");
    for m in &status.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {mode}",
            m.path.display().to_string(),
            m.page_size.to_string()
        );
    }
    out
}

/// Hand-written JSON (a few fields; not worth a serde_json dependency).
fn json(status: &HugepageStatus) -> String {
    let pools: Vec<String> = status
        .pools
        .iter()
        .map(|p| {
            format!(
                r#"{{"page_size":{},"page_size_bytes":{},"total":{},"free":{},"reserved":{},"surplus":{},"overcommit":{},"available":{}}}"#,
                json_str(&p.page_size.to_string()),
                p.page_size.bytes(),
                p.total,
                p.free,
                p.reserved,
                p.surplus,
                p.overcommit,
                p.available()
            )
        })
        .collect();
    let mounts: Vec<String> = status
        .mounts
        .iter()
        .map(|m| {
            format!(
                r#"{{"path":{},"page_size":{},"page_size_bytes":{},"read_only":{},"options":{}}}"#,
                json_str(&m.path.display().to_string()),
                json_str(&m.page_size.to_string()),
                m.page_size.bytes(),
                m.read_only,
                json_str(&m.options)
            )
        })
        .collect();
    let default = status
        .default_page_size()
        .map_or_else(|| "null".to_owned(), |p| p.bytes().to_string());
    format!(
        r#"{{"default_page_size_bytes":{default},"pools":[{}],"mounts":[{}]}}"#,
        pools.join(","),
        mounts.join(",")
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn cli_parses() {
        let opt = Opt::try_parse_from([
            "x",
            "reserve",
            "64",
            "--size",
            "2M",
            "--mount",
            "/dev/hugepages",
        ]);
        match opt.map(|o| o.command) {
            Ok(Command::Reserve {
                count: 64,
                size: Some(s),
                mount: Some(_),
            }) => {
                assert_eq!(s, PageSize::SIZE_2M);
            }
            other => panic!("{other:?}"),
        }
        assert!(Opt::try_parse_from(["x", "reserve", "64", "--size", "3M"]).is_err());
        assert!(Opt::try_parse_from(["x", "status", "--output", "json"]).is_ok());
    }
}
