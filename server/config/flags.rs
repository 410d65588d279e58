//! The command-line flags of `oxserve serve`, one per [`Setting`], made
//! from the settings table rather than written out again.
//!
//! A flag's value is read exactly as the same key's `OXSERVE_*` variable
//! is (figment's value syntax), so `--max-batch-size 8` and
//! `OXSERVE_MAX_BATCH_SIZE=8` mean the same; list settings take repeated
//! flags or comma-separated values.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use figment::value::{Dict, Value};

use super::{SETTINGS, Setting};

/// The settings given as flags, ready to merge over the other layers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingFlags {
    given: Dict,
}

impl SettingFlags {
    /// The flags as a figment dictionary (key → value).
    pub fn dict(&self) -> &Dict {
        &self.given
    }
}

/// The `--help` text of a setting: its summary, then where else it can be
/// set and its default.
fn help(setting: &Setting) -> String {
    let summary = setting.paragraphs().into_iter().next().unwrap_or_default();
    format!(
        "{summary} [key: {}, env: {}, default: {}]",
        setting.key,
        setting.env(),
        setting.default
    )
}

fn arg(setting: &'static Setting) -> Arg {
    let arg = Arg::new(setting.key)
        .long(setting.key.replace('_', "-"))
        .value_name(setting.value)
        .help(help(setting));
    if setting.list {
        arg.action(ArgAction::Append).value_delimiter(',')
    } else {
        arg.action(ArgAction::Set)
    }
}

impl Args for SettingFlags {
    fn augment_args(cmd: Command) -> Command {
        cmd.args(SETTINGS.iter().map(arg))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = SettingFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            let Some(mut values) = matches.get_many::<String>(setting.key) else {
                continue;
            };
            let parse = |v: &String| v.parse::<Value>().unwrap_or_else(|e| match e {});
            let value = if setting.list {
                Value::from(values.map(parse).collect::<Vec<Value>>())
            } else {
                match values.next_back() {
                    Some(v) => parse(v),
                    None => continue,
                }
            };
            self.given.insert(setting.key.to_string(), value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        flags: SettingFlags,
    }

    fn parse(args: &[&str]) -> Dict {
        let mut argv = vec!["oxserve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().flags.given
    }

    #[test]
    fn every_setting_has_a_flag_naming_its_key_env_and_default() {
        let mut cmd = Cli::command();
        let help = cmd.render_long_help().to_string();
        for setting in SETTINGS {
            assert!(help.contains(&setting.flag()), "{}", setting.flag());
            assert!(help.contains(&setting.env()), "{}", setting.env());
            assert!(
                help.contains(&format!("default: {}", setting.default)),
                "{}",
                setting.key
            );
        }
    }

    #[test]
    fn values_read_as_their_environment_variables_would() {
        let given = parse(&[
            "--max-batch-size",
            "8",
            "--strict-readiness",
            "false",
            "--grpc-address",
            "127.0.0.1:9001",
        ]);
        assert_eq!(given["max_batch_size"], Value::from(8u64));
        assert_eq!(given["strict_readiness"], Value::from(false));
        assert_eq!(given["grpc_address"], Value::from("127.0.0.1:9001"));
        assert_eq!(given.len(), 3, "flags not given are not set");
    }

    #[test]
    fn list_settings_take_commas_or_repeats() {
        let expected = Value::from(vec![Value::from(8u64), Value::from(16u64)]);
        let given = parse(&["--preferred-batch-sizes", "8,16"]);
        assert_eq!(given["preferred_batch_sizes"], expected);
        let given = parse(&[
            "--preferred-batch-sizes",
            "8",
            "--preferred-batch-sizes",
            "16",
        ]);
        assert_eq!(given["preferred_batch_sizes"], expected);
    }
}
