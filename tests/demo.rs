//! `mishare demo`, the README's first command: it runs the whole job on
//! loopback, and the files it says were delivered open with the standard
//! `age` tool to a rounded, labelled table.

use std::process::Command;

#[test]
fn demo_delivers_to_permitted_las_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(["demo", "--participants", "5000", "--out"])
        .arg(&out)
        .output()
        .expect("run mishare demo");
    let stdout = String::from_utf8(output.stdout).expect("utf8");
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );

    let line = |la: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{la} ")) && !l.contains(" at https://"))
            .unwrap_or_else(|| panic!("no result line for {la}: {stdout}"))
            .trim()
            .to_string()
    };
    assert!(
        line("E09000002").starts_with("E09000002 delivered "),
        "{stdout}"
    );
    assert!(
        line("E09000030").starts_with("E09000030 delivered "),
        "{stdout}"
    );
    assert!(
        line("E09000009").starts_with("E09000009 refused SUSPENDED_BY_PROVIDER"),
        "{stdout}"
    );
    assert!(
        line("E09000005").starts_with("E09000005 refused NO_AGREEMENT"),
        "{stdout}"
    );
    assert!(
        line("E08000025").starts_with("E08000025 refused "),
        "{stdout}"
    );
    assert!(stdout.contains("error[E_OUTCOME_VOLUME]: "));

    // Run the `age -d` commands the demo printed.
    let commands: Vec<Vec<&str>> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("age -d -i "))
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(commands.len(), 2, "{stdout}");
    for (command, name) in commands.iter().zip([
        "Barking and Dagenham (E09000002)",
        "Tower Hamlets (E09000030)",
    ]) {
        let opened = Command::new(command[0])
            .args(&command[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run age ({e}); install Debian's age package"));
        assert!(
            opened.status.success(),
            "{}",
            String::from_utf8_lossy(&opened.stderr)
        );
        let csv = String::from_utf8(opened.stdout).expect("utf8");
        assert!(
            csv.starts_with(&format!(
                "# Internal MI – for {name} only – not for publication\n"
            )),
            "{csv}"
        );
        for row in csv.lines().filter(|l| !l.starts_with('#')).skip(1) {
            for figure in row.split(',').skip(1) {
                let n: u64 = figure.parse().expect("a figure");
                assert_eq!(n % 20, 0, "{row}");
            }
        }
    }

    // Nothing reached the refused LAs, and no plaintext is anywhere on the
    // provider's side (its state and spool hold only ciphertext).
    for refused in ["la-e09000009", "la-e09000005", "la-e08000025"] {
        let files = files_under(&out.join(refused).join("inbox"));
        assert!(files.is_empty(), "{refused}: {files:?}");
    }
    let provider_files = files_under(&out.join("var/provider"));
    assert!(!provider_files.is_empty());
    for file in provider_files {
        let bytes = std::fs::read(&file).expect("read");
        assert!(
            !bytes.windows(11).any(|w| w == b"Internal MI"),
            "plaintext in {}",
            file.display()
        );
    }
    let again = Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(["demo", "--out"])
        .arg(&out)
        .output()
        .expect("run mishare demo");
    assert!(
        !again.status.success(),
        "a second demo into the same directory is refused"
    );
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}
