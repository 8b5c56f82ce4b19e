//! One TOML configuration file for every component: `--config FILE`, or `LEGO_CONFIG`.
//!
//! ```toml
//! [cluster]                       # every command that has the option
//! global_mgr = "10.0.0.1:7060"    # the cluster's address: --global-mgr, alias --cluster (LEGO_CLUSTER)
//! id = 7                          # --cluster-id (LEGO_CLUSTER_ID)
//! secret = "correct horse"        # the cluster secret (LEGO_CLUSTER_SECRET)
//! heartbeat_ms = 1000             # --heartbeat-ms
//!
//! [global_mgr]                    # lego global-mgr
//! listen = "10.0.0.1:7060"
//! state_dir = "/var/lib/lego/global"
//! metrics = "127.0.0.1:9460"
//!
//! [mem_server]                    # lego mem-server
//! listen = "10.0.0.2:7070"
//! capacity = "8G"
//! storage_server = "10.0.0.4:7080"
//! buffer_cache = "256M"
//! backup_log = "64M"
//! metrics = "127.0.0.1:9464"
//!
//! [storage_server]                # lego storage-server
//! listen = "10.0.0.4:7080"
//! dir = "/srv/lego"
//! metrics = "127.0.0.1:9465"
//!
//! [pcomp]                         # lego pcomp
//! listen = "10.0.0.5:7050"
//! metrics = "127.0.0.1:9466"
//!
//! [run]                           # lego run
//! mem = "4G"
//! mem_server = ["10.0.0.2:7070", "10.0.0.3:7070"]
//! excache = "64M"
//! excache_ways = 0
//! excache_policy = "clock"
//! prefetch = 32
//! excache_cleaner = true
//! vregion_size = "1G"
//! mem_timeout = 30
//! replicas = 1
//! transport = "tcp"               # or "rdma", "auto" (also a key of [mem_server])
//! ```
//!
//! # Precedence
//!
//! An option's value comes from the command line, else its environment variable, else the
//! configuration file, else its built-in default. A key of a command's section is the default
//! of that command's option of the same name (`--buffer-cache` is `buffer_cache`); a key of
//! `[cluster]` is the default of every command that has the option. So the cluster's address
//! comes from `--cluster`/`--global-mgr`, `LEGO_CLUSTER` or `cluster.global_mgr`, and the secret
//! from `LEGO_CLUSTER_SECRET` or `cluster.secret`. `lego up` passes the file on to the
//! components it starts.
//!
//! # Validation
//!
//! The whole file is checked at start-up, before the command runs: an unknown section or key,
//! or a value that is not what its option takes, stops the command with a message that names
//! the file, the key and the value, e.g. `lego: config /etc/lego.toml: mem_server.capacity =
//! "4X": not a size (use e.g. 512M, 4G)`.
//!
//! # Adding a section
//!
//! A struct of optional fields named like the command's options, and a field of [`Config`]
//! named like the command (`_` for `-`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{Command, CommandFactory, FromArgMatches};
use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;

use lego_proto::rdma::select::TransportChoice;

use crate::memory::PolicyArg;

/// The environment variable naming the configuration file.
const CONFIG_ENV: &str = "LEGO_CONFIG";

/// The `--config` option.
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file: its values are the defaults of the options of the same name
    /// (sections [cluster], [global_mgr], [mem_server], [storage_server], [pcomp], [run]).
    #[arg(long, global = true, env = CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Puts the configuration file in the environment, so the components `lego up` starts read
    /// it too (only there: `lego run` passes its environment to the program). Call before any
    /// thread starts.
    pub fn export(&self) -> anyhow::Result<()> {
        if let Some(file) = &self.config {
            // Single-threaded at this point: nothing reads the environment concurrently.
            std::env::set_var(CONFIG_ENV, std::path::absolute(file)?);
        }
        Ok(())
    }
}

/// The configuration file's contents, every value checked.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    cluster: Cluster,
    global_mgr: GlobalMgr,
    mem_server: MemServer,
    storage_server: StorageServer,
    pcomp: Pcomp,
    run: Run,
}

/// `[cluster]`: options of every command.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Cluster {
    global_mgr: Option<Addr>,
    #[serde(rename(serialize = "cluster_id"))]
    id: Option<u64>,
    #[serde(skip_serializing)]
    secret: Option<String>,
    heartbeat_ms: Option<HeartbeatMs>,
}

/// `[global_mgr]`: options of `lego global-mgr`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct GlobalMgr {
    listen: Option<Addr>,
    state_dir: Option<PathBuf>,
    metrics: Option<Addr>,
}

/// `[mem_server]`: options of `lego mem-server`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct MemServer {
    listen: Option<Addr>,
    capacity: Option<Size>,
    storage_server: Option<Addr>,
    buffer_cache: Option<Size>,
    backup_log: Option<Size>,
    transport: Option<TransportChoice>,
    metrics: Option<Addr>,
}

/// `[storage_server]`: options of `lego storage-server`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct StorageServer {
    listen: Option<Addr>,
    dir: Option<PathBuf>,
    metrics: Option<Addr>,
}

/// `[pcomp]`: options of `lego pcomp`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Pcomp {
    listen: Option<Addr>,
    metrics: Option<Addr>,
}

/// `[run]`: options of `lego run`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct Run {
    mem: Option<Size>,
    mem_server: Option<Vec<Addr>>,
    excache: Option<Size>,
    excache_ways: Option<usize>,
    excache_policy: Option<PolicyArg>,
    prefetch: Option<u64>,
    excache_cleaner: Option<bool>,
    vregion_size: Option<Size>,
    mem_timeout: Option<u64>,
    replicas: Option<u8>,
    transport: Option<TransportChoice>,
}

/// A size: bytes, or a string as the command line takes it (`512M`, `4G`), kept as written.
#[derive(Serialize)]
#[serde(transparent)]
struct Size(String);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size (e.g. 512M, 4G)")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self)).and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
                crate::size::parse_size(s).map(|_| Size(s.to_string())).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A `host:port` address.
#[derive(Serialize)]
#[serde(transparent)]
struct Addr(String);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Addr, D::Error> {
        let s = String::deserialize(d)?;
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Addr(s)),
            _ => Err(serde::de::Error::custom("not an address (use host:port, e.g. 127.0.0.1:7070)")),
        }
    }
}

/// A heartbeat interval the options accept.
#[derive(Serialize)]
#[serde(transparent)]
struct HeartbeatMs(u64);

impl<'de> Deserialize<'de> for HeartbeatMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HeartbeatMs, D::Error> {
        let ms = u64::deserialize(d)?;
        let range = crate::global::HEARTBEAT_MS;
        if !range.contains(&ms) {
            return Err(serde::de::Error::custom(format!("not in {}..={} milliseconds", range.start(), range.end())));
        }
        Ok(HeartbeatMs(ms))
    }
}

/// The defaults a configuration gives: options (by clap id) and their values, for one command.
type Defaults = Vec<(String, Vec<String>)>;

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("config {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|why| anyhow!("config {}: {why}", path.display()))
    }

    /// Checks a configuration; the error names the key and the value.
    fn parse(text: &str) -> anyhow::Result<Config> {
        let root = toml::Value::Table(text.parse::<toml::Table>().map_err(|e| anyhow!("{e}"))?);
        serde_path_to_error::deserialize(root.clone()).map_err(|e| {
            let (key, msg) = (e.path().to_string(), e.inner().message());
            if let Some(rest) = msg.strip_prefix("unknown field ") {
                // "`name`, expected one of `a`, `b`": the key is in `key` already.
                return anyhow!("{key}: unknown key ({})", rest.split_once(", ").map_or(rest, |r| r.1));
            }
            let value = e.path().iter().try_fold(&root, |v, segment| match segment {
                Segment::Map { key } => v.get(key),
                Segment::Seq { index } => v.get(index),
                _ => None,
            });
            match value {
                Some(value) => anyhow!("{key} = {value}: {msg}"),
                None => anyhow!("{key}: {msg}"),
            }
        })
    }

    /// The options each section sets: `[cluster]`'s (for every command) first, then each
    /// command's, with the name of its command.
    fn defaults(&self) -> anyhow::Result<(Defaults, Vec<(String, Defaults)>)> {
        let table = toml::Table::try_from(self).context("the configuration as options")?;
        let options = |section: &toml::Value| -> Defaults {
            let values = |v: &toml::Value| match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let table = section.as_table().into_iter().flatten();
            table
                .map(|(k, v)| (k.clone(), v.as_array().map_or_else(|| vec![values(v)], |a| a.iter().map(values).collect())))
                .collect()
        };
        let mut cluster = Defaults::new();
        let mut commands = Vec::new();
        for (section, value) in &table {
            match section.as_str() {
                "cluster" => cluster = options(value),
                _ => commands.push((section.replace('_', "-"), options(value))),
            }
        }
        Ok((cluster, commands))
    }

    /// `cmd` (the `lego` command) with this configuration's values as option defaults.
    fn apply(&self, cmd: Command) -> anyhow::Result<Command> {
        let (cluster, commands) = self.defaults()?;
        let mut cmd = for_each_command(cmd, &|c| set_defaults(c, &cluster));
        for (name, options) in &commands {
            anyhow::ensure!(cmd.find_subcommand(name).is_some(), "no command {name} for section [{}]", name.replace('-', "_"));
            cmd = cmd.mut_subcommand(name, |c| set_defaults(c, options));
        }
        Ok(cmd)
    }

    /// Installs what is not an option: the cluster secret, used where `LEGO_CLUSTER_SECRET` is
    /// unset.
    fn install(&self) {
        if let Some(secret) = &self.cluster.secret {
            lego_proto::auth::Secret::set_fallback(lego_proto::auth::Secret::new(secret.as_bytes()));
        }
    }
}

/// `cmd` with the defaults of those `options` it has; an option given a default is no longer
/// required.
fn set_defaults(cmd: Command, options: &Defaults) -> Command {
    options.iter().fold(cmd, |cmd, (id, values)| {
        if cmd.get_arguments().any(|a| a.get_id() == id.as_str()) {
            cmd.mut_arg(id, |a| a.default_values(values).required(false))
        } else {
            cmd
        }
    })
}

/// `cmd` with `f` applied to it and to every subcommand, recursively.
fn for_each_command(cmd: Command, f: &dyn Fn(Command) -> Command) -> Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    names.iter().fold(f(cmd), |cmd, name| cmd.mut_subcommand(name, |s| for_each_command(s, f)))
}

/// The configuration file named by `--config` or `LEGO_CONFIG`, found without judging the rest
/// of the command line (the real parse reports its errors, and shows help with the file's
/// defaults).
fn named_file<C: CommandFactory>() -> Option<PathBuf> {
    let lenient = for_each_command(C::command(), &|c| c.disable_help_flag(true).disable_version_flag(true)).ignore_errors(true);
    lenient.try_get_matches().ok()?.get_one::<PathBuf>("config").cloned()
}

/// Parses the command line into `C`, with the values of the configuration file (if one is
/// named) as option defaults, and installs the file's cluster secret. Exits with clap's
/// message on a bad command line; a bad configuration file is an error.
pub fn parse<C: CommandFactory + FromArgMatches>() -> anyhow::Result<C> {
    let config = match named_file::<C>() {
        Some(file) => Config::load(&file)?,
        None => Config::default(),
    };
    config.install();
    let matches = config.apply(C::command())?.get_matches();
    Ok(C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lego_proto::sync::LockExt;

    const FULL: &str = r#"
        [cluster]
        global_mgr = "10.0.0.1:7060"
        id = 7
        secret = "s"
        heartbeat_ms = 250
        [global_mgr]
        listen = "0.0.0.0:7060"
        state_dir = "/var/lib/lego"
        metrics = "127.0.0.1:9460"
        [mem_server]
        listen = "[::1]:7070"
        capacity = "8G"
        storage_server = "storage.example:7080"
        buffer_cache = 1048576
        metrics = "127.0.0.1:9464"
        [storage_server]
        listen = "10.0.0.4:7080"
        dir = "/srv/lego"
        metrics = "127.0.0.1:9465"
        [pcomp]
        listen = "10.0.0.5:7050"
        metrics = "127.0.0.1:9466"
        [run]
        mem = "1G"
        mem_server = ["10.0.0.2:7070", "10.0.0.3:7070"]
        excache = "64M"
        excache_ways = 16
        excache_policy = "lru"
        prefetch = 8
        vregion_size = "2M"
        mem_timeout = 5
        transport = "auto"
    "#;

    fn error(text: &str) -> String {
        Config::parse(text).err().expect("an error").to_string()
    }

    #[test]
    fn bad_values_are_named_with_their_key() {
        let cases = [
            ("[mem_server]\ncapacity = \"4X\"", "mem_server.capacity = \"4X\": not a size (use e.g. 512M, 4G)"),
            ("[run]\nexcache = -3", "run.excache = -3: invalid value: integer `-3`, expected a size (e.g. 512M, 4G)"),
            ("[cluster]\nglobal_mgr = \"nohost\"", "cluster.global_mgr = \"nohost\": not an address (use host:port, e.g. 127.0.0.1:7070)"),
            ("[run]\nmem_server = [\"a:1\", \"b:99999\"]", "run.mem_server[1] = \"b:99999\": not an address"),
            ("[cluster]\nid = \"seven\"", "cluster.id = \"seven\": invalid type: string \"seven\", expected u64"),
            ("[cluster]\nheartbeat_ms = 5", "cluster.heartbeat_ms = 5: not in 10..=60000 milliseconds"),
            ("[run]\nexcache_policy = \"random\"", "run.excache_policy = \"random\": unknown variant `random`, expected one of `fifo`, `clock`, `lru`"),
            ("mem_server = 5", "mem_server = 5: invalid type: integer `5`"),
            ("[run]\ntransport = \"ib\"", "run.transport = \"ib\": unknown variant `ib`, expected one of `tcp`, `rdma`, `auto`"),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.starts_with(want), "{text:?}:\n got  {got}\n want {want}");
        }
    }

    #[test]
    fn unknown_keys_and_sections_are_named() {
        let got = error("[mem_server]\ncapcity = \"4G\"");
        assert!(got.starts_with("mem_server.capcity: unknown key (expected one of `listen`, `capacity`"), "{got}");
        assert!(error("[memserver]\nx = 1").starts_with("memserver: unknown key (expected one of `cluster`"));
        assert!(error("[cluster]\nid = 1\nid = 2").contains("duplicate key"), "TOML syntax errors say where");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/lego.toml")).err().unwrap().to_string();
        assert!(e.starts_with("config /nonexistent/lego.toml: "), "{e}");
    }

    /// Tests that read the environment through clap, one at a time.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The matches of `lego ARGS` with the configuration `text`.
    fn parse_with(text: &str, args: &[&str]) -> clap::ArgMatches {
        let cmd = Config::parse(text).unwrap().apply(crate::Cli::command()).unwrap();
        let m = cmd.try_get_matches_from(std::iter::once("lego").chain(args.iter().copied())).unwrap();
        crate::Cli::from_arg_matches(&m).unwrap();
        m
    }

    #[test]
    fn every_key_is_an_option_of_its_command() {
        let _env = ENV.lock_unpoisoned();
        let (cluster, commands) = Config::parse(FULL).unwrap().defaults().unwrap();
        let cmd = crate::Cli::command();
        for (id, _) in &cluster {
            assert!(cmd.get_subcommands().any(|c| c.get_arguments().any(|a| a.get_id() == id.as_str())), "cluster.{id}");
        }
        assert_eq!(commands.len(), 5);
        for (name, options) in &commands {
            let c = cmd.find_subcommand(name).unwrap_or_else(|| panic!("no command {name}"));
            for (id, _) in options {
                assert!(c.get_arguments().any(|a| a.get_id() == id.as_str()), "{name} has no option {id}");
            }
        }
        // And the values parse: every command runs with nothing but the file, required options
        // included.
        for args in [&["global-mgr"][..], &["mem-server"], &["storage-server"], &["pcomp"], &["run", "prog"], &["ps"], &["up"], &["vnode", "ls"]] {
            parse_with(FULL, args);
        }
        let m = parse_with(FULL, &["run", "prog"]);
        let run = m.subcommand_matches("run").unwrap();
        let servers: Vec<&String> = run.get_many("mem_server").unwrap().collect();
        assert_eq!(servers, ["10.0.0.2:7070", "10.0.0.3:7070"]);
        assert_eq!(run.get_one::<u64>("excache"), Some(&(64 << 20)));
        assert_eq!(run.get_one::<u64>("prefetch"), Some(&8));
        let transport = run.get_one::<lego_proto::rdma::select::TransportChoice>("transport");
        assert_eq!(transport, Some(&lego_proto::rdma::select::TransportChoice::Auto));
    }

    #[test]
    fn command_line_then_environment_then_file_then_default() {
        let _env = ENV.lock_unpoisoned();
        let id = |text: &str, args: &[&str]| -> u64 {
            *parse_with(text, args).subcommand_matches("mem-server").unwrap().get_one::<u64>("cluster_id").unwrap()
        };
        let file = "[cluster]\nid = 7\n[mem_server]\ncapacity = \"1G\"";
        std::env::remove_var("LEGO_CLUSTER_ID");
        assert_eq!(id("", &["mem-server", "--capacity", "1G"]), 0, "the default");
        assert_eq!(id(file, &["mem-server"]), 7, "the file over the default");
        std::env::set_var("LEGO_CLUSTER_ID", "8");
        assert_eq!(id(file, &["mem-server"]), 8, "the environment over the file");
        assert_eq!(id(file, &["mem-server", "--cluster-id", "9"]), 9, "the command line over the environment");
        std::env::remove_var("LEGO_CLUSTER_ID");

        // The cluster's address: --cluster is --global-mgr; LEGO_CLUSTER and the file name it too.
        let global = |text: &str, args: &[&str]| -> Option<String> {
            parse_with(text, args).subcommand_matches("ps").unwrap().get_one::<String>("global_mgr").cloned()
        };
        let file = "[cluster]\nglobal_mgr = \"10.0.0.1:7060\"";
        std::env::remove_var("LEGO_CLUSTER");
        assert_eq!(global("", &["ps"]), None);
        assert_eq!(global(file, &["ps"]).as_deref(), Some("10.0.0.1:7060"));
        std::env::set_var("LEGO_CLUSTER", "10.0.0.2:7060");
        assert_eq!(global(file, &["ps"]).as_deref(), Some("10.0.0.2:7060"));
        assert_eq!(global(file, &["ps", "--cluster", "10.0.0.3:7060"]).as_deref(), Some("10.0.0.3:7060"));
        assert_eq!(global(file, &["ps", "--global-mgr", "10.0.0.4:7060"]).as_deref(), Some("10.0.0.4:7060"));
        std::env::remove_var("LEGO_CLUSTER");
    }
}
