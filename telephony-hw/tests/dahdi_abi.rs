//! The Rust DAHDI ABI equals the real one: a C program compiled against Debian's
//! `dahdi-source` header (`dahdi/user.h`) prints every ioctl number, struct size, field
//! offset and constant that `telephony_hw::dahdi::abi::abi_facts` states, and they must match.
//!
//! The header comes from `$DAHDI_INCLUDE`, else `target/dahdi-source/usr/include`, which
//! `scripts/test.sh` fills with `apt-get download dahdi-source && dpkg -x`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use telephony_hw::dahdi::abi::abi_facts;

fn include_dir() -> PathBuf {
    let dir = std::env::var("DAHDI_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dahdi-source/usr/include")
        });
    assert!(
        dir.join("dahdi/user.h").exists(),
        "dahdi/user.h not found under {}: run scripts/test.sh (it fetches the dahdi-source package) \
         or set DAHDI_INCLUDE",
        dir.display()
    );
    dir
}

#[test]
fn every_number_size_and_offset_matches_the_c_header() {
    let include = include_dir();
    let facts = abi_facts();
    let mut program = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <dahdi/user.h>\nint main(void) {\n",
    );
    for (expression, _) in &facts {
        program.push_str(&format!(
            "    printf(\"%s\\t%llu\\n\", \"{expression}\", (unsigned long long)(long long)({expression}));\n"
        ));
    }
    program.push_str("    return 0;\n}\n");
    let dir = tempfile::tempdir().unwrap();
    let (source, binary) = (dir.path().join("abi.c"), dir.path().join("abi"));
    std::fs::write(&source, program).unwrap();
    let compiled = Command::new("cc")
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("a C compiler (cc) is needed");
    assert!(
        compiled.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let output = Command::new(&binary).output().unwrap();
    let from_c: BTreeMap<String, u64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('\t')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    assert_eq!(
        from_c.len(),
        facts.len(),
        "the C program printed every fact"
    );
    let wrong: Vec<String> = facts
        .iter()
        .filter(|(expression, value)| from_c.get(*expression) != Some(value))
        .map(|(expression, value)| {
            format!(
                "{expression}: Rust {value:#x}, C {:#x?}",
                from_c.get(*expression)
            )
        })
        .collect();
    assert!(wrong.is_empty(), "ABI mismatches:\n{}", wrong.join("\n"));
    // The values DESIGN.md §5 lists, as a second witness.
    assert_eq!(from_c["DAHDI_SPANSTAT"], 0xC13A_DA0A);
    assert_eq!(from_c["DAHDI_GET_PARAMS"], 0xC088_DA05);
    assert_eq!(from_c["sizeof(struct dahdi_params)"], 136);
}
