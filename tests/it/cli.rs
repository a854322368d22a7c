//! What is generated from the command-line definitions: shell completions and man pages.

use std::process::Output;

use crate::support;

const COMMANDS: [&str; 5] = ["run", "demo", "check", "status", "teardown"];

fn lsnpipe(args: &[&str]) -> Output {
    support::lsnpipe_command()
        .args(args)
        .output()
        .expect("run lsnpipe")
}

fn completion(shell: &str) -> String {
    let out = lsnpipe(&["completions", shell]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).expect("UTF-8");
    for command in COMMANDS {
        assert!(script.contains(command), "{shell} script lacks {command}");
    }
    // A flag of a subcommand, not only the command names.
    assert!(
        script.contains("create-slot"),
        "{shell} script lacks --create-slot"
    );
    script
}

#[test]
fn bash_completion_is_valid_bash_and_completes_commands_and_flags() {
    let script = completion("bash");
    let path = std::env::temp_dir().join(format!("lsnpipe-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash");
    assert!(check.status.success(), "bash -n: {check:?}");
    // Sourced, it completes a command name and a flag as bash would at a prompt.
    let complete = |words: &str| -> String {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source \"$0\"; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 _lsnpipe lsnpipe \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 echo \"${{COMPREPLY[*]}}\""
            ))
            .arg(&path)
            .output()
            .expect("run bash");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(complete("lsnpipe ru"), "run");
    assert_eq!(complete("lsnpipe run --create-s"), "--create-slot");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    assert!(completion("zsh").starts_with("#compdef lsnpipe"));
    assert!(completion("fish").contains("complete -c lsnpipe"));
}

#[test]
fn an_unknown_shell_is_refused_with_the_choices() {
    let out = lsnpipe(&["completions", "tcsh"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
}

#[test]
fn man_page_describes_every_command() {
    let out = lsnpipe(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        page.starts_with(".ie") || page.contains(".TH lsnpipe 1"),
        "{page}"
    );
    assert!(page.contains(".TH lsnpipe 1"), "{page}");
    for command in COMMANDS {
        assert!(page.contains(command), "man page lacks {command}");
    }

    let dir = std::env::temp_dir().join(format!("lsnpipe-man-{}", std::process::id()));
    let out = lsnpipe(&["man", "--out-dir", &dir.to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    for command in COMMANDS {
        let page = std::fs::read_to_string(dir.join(format!("lsnpipe-{command}.1")))
            .unwrap_or_else(|e| panic!("lsnpipe-{command}.1: {e}"));
        assert!(page.contains(&format!(".TH lsnpipe-{command} 1")), "{page}");
    }
    // The run page documents its flags.
    let run = std::fs::read_to_string(dir.join("lsnpipe-run.1")).unwrap();
    assert!(run.contains("create\\-slot"), "{run}");
    let _ = std::fs::remove_dir_all(&dir);
}
