//! `atp completions bash|zsh|fish`: the shell completion script, generated from the command line's
//! definition (clap_complete), on stdout. Installing it: README "Running in production".

use clap::CommandFactory;

use super::CmdError;
use crate::cli::{Cli, CompletionsArgs};

pub fn completions(a: CompletionsArgs) -> Result<(), CmdError> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "atp", &mut out);
    super::write_stdout(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_subcommands() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "atp", &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["doctor", "server", "log-format", "completions"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
    }
}
