//! `atp man`: the manual page of atp (roff, clap_mangen) on stdout, or with `--dir DIR` one page per
//! command (`atp.1`, `atp-server-start.1`, `atp-doctor.1`, …) written into DIR, ready for
//! `/usr/local/share/man/man1`.

use clap::CommandFactory;

use super::{print_line, CmdError};
use crate::cli::{Cli, ManArgs};

pub fn man(a: ManArgs) -> Result<(), CmdError> {
    let cmd = Cli::command();
    match a.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(CmdError::io(dir.display().to_string()))?;
            clap_mangen::generate_to(cmd, &dir).map_err(CmdError::io(dir.display().to_string()))?;
            let mut pages: Vec<String> = std::fs::read_dir(&dir)
                .map_err(CmdError::io(dir.display().to_string()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("atp") && n.ends_with(".1"))
                .collect();
            pages.sort();
            print_line(&format!("{} pages in {}: {}", pages.len(), dir.display(), pages.join(" ")))
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out).map_err(CmdError::io("man page"))?;
            super::write_stdout(&out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_for_every_command() {
        let dir = tempfile::tempdir().unwrap();
        man(ManArgs { dir: Some(dir.path().to_owned()) }).unwrap();
        for page in ["atp.1", "atp-server-start.1", "atp-doctor.1", "atp-completions.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is roff");
        }
    }
}
