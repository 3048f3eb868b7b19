//! What the binaries' command lines share: shell completions and the seconds parser.
//!
//! Each binary's options live beside the code they configure ([`crate::client::args`],
//! [`crate::daemon::args`]) so that the man-page test, the completions and the binaries all see
//! the same definitions: a flag added there shows up in `--help`, in the completions, and fails
//! the man-page test until it is documented.

use std::time::Duration;

use clap::ValueEnum;

/// Shells we write completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes `shell`'s completion script for the command `C` to stdout.
pub fn print_completions<C: clap::CommandFactory>(shell: Shell) {
    let mut command = C::command();
    let name = command.get_name().to_owned();
    let mut out = std::io::stdout();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut command, name, &mut out)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut command, name, &mut out)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut command, name, &mut out)
        }
    }
}

pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "expected a positive number of seconds, got {text:?}"
        )),
    }
}
