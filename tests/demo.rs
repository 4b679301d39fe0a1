//! `mishare demo`, the README's first command, runs and shows what it says.

use std::process::Command;

#[test]
fn demo_shows_rounded_tables_and_a_refusal() {
    let output = Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(["demo", "--participants", "5000"])
        .output()
        .expect("run mishare demo");
    let stdout = String::from_utf8(output.stdout).expect("utf8");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(
        "# Internal MI – for Barking and Dagenham (E09000002) only – not for publication"
    ));
    assert!(stdout.contains("# Published – public domain"));
    assert!(stdout.contains("error[E_OUTCOME_VOLUME]: "));
    // Every figure in a counts table is a multiple of 20.
    let mut figures = 0;
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("JSA ") || l.starts_with("Total,"))
    {
        for field in line.split(',').skip(1) {
            let n: u64 = field.parse().expect("a figure");
            assert_eq!(n % 20, 0, "{line}");
            figures += 1;
        }
    }
    assert!(figures > 20, "the demo printed counts tables");
}
