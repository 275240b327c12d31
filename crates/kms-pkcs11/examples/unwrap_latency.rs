//! Unwrap latency of the `pkcs11` backend (on the test token) next to the `local`
//! keyring, measured in the same run.
//!
//! ```sh
//! apt-get install softhsm2            # or set BYOK_TEST_PKCS11_* for another token
//! cargo run --release -p byok-kms-pkcs11 --example unwrap_latency [-- <unwraps> [<other orgs>]]
//! ```
//!
//! Each backend gets one org and one wrapped DEK, a short warm-up, then `<unwraps>`
//! (default 2000) timed `unwrap_dek` calls from one thread; the example prints
//! percentiles of the per-call times. The last row repeats the pkcs11 measurement after
//! filling the token with `<other orgs>` (default 200) more orgs' KEKs, since SoftHSM2's
//! object lookups get slower as its token fills.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use byok_crypto::{Dek, Kms, LocalKeyring};
use byok_domain::OrgId;
use byok_kms_pkcs11::{testing, Pkcs11Config, Pkcs11Kms, WrapMechanism};

const WARM_UP: usize = 100;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("unwrap_latency: {problem}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let count = |position: usize, default: usize| match std::env::args().nth(position) {
        Some(n) => n.parse().map_err(|_| format!("not a count: {n}")),
        None => Ok(default),
    };
    let (unwraps, others) = (count(1, 2000)?, count(2, 200)?);
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = testing::test_token(&scratch.path().join("softhsm"))?
        .ok_or_else(|| format!("no PKCS#11 test token: {}", testing::NOT_INSTALLED))?;
    let keyring = LocalKeyring::open(scratch.path().join("keyring.json")).map_err(|e| e.to_string())?;

    println!("{unwraps} unwraps of a 256-bit DEK per backend, one thread, after {WARM_UP} warm-up calls");
    println!("{:<30} {:>9} {:>9} {:>9} {:>9}", "backend", "p50", "p90", "p99", "max");
    report("local (A256GCM-KW)", &measure(&keyring, unwraps)?);
    for mechanism in WrapMechanism::ALL {
        let kms = Pkcs11Kms::open(&Pkcs11Config { mechanism, ..config.clone() }).map_err(|e| e.to_string())?;
        report(&format!("pkcs11 ({})", mechanism.alg()), &measure(&kms, unwraps)?);
    }
    if others > 0 {
        let kms = Pkcs11Kms::open(&config).map_err(|e| e.to_string())?;
        for _ in 0..others {
            let org = OrgId::generate();
            kms.create_org_kek(&org).map_err(|e| e.to_string())?;
        }
        report(&format!("pkcs11 ({}), +{others} orgs", kms.mechanism().alg()), &measure(&kms, unwraps)?);
    }
    Ok(())
}

fn measure(kms: &dyn Kms, unwraps: usize) -> Result<Vec<Duration>, String> {
    let org = OrgId::generate();
    kms.create_org_kek(&org).map_err(|e| e.to_string())?;
    let wrapped = kms.wrap_dek(&org, &Dek::generate()).map_err(|e| e.to_string())?;
    for _ in 0..WARM_UP {
        kms.unwrap_dek(&org, &wrapped).map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(unwraps);
    for _ in 0..unwraps {
        let started = Instant::now();
        let dek = kms.unwrap_dek(&org, &wrapped).map_err(|e| e.to_string())?;
        times.push(started.elapsed());
        drop(dek);
    }
    times.sort_unstable();
    Ok(times)
}

fn report(name: &str, sorted: &[Duration]) {
    let at = |quantile: f64| {
        let index = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
        format!("{:.1}µs", sorted[index].as_secs_f64() * 1e6)
    };
    println!("{name:<30} {:>9} {:>9} {:>9} {:>9}", at(0.50), at(0.90), at(0.99), at(1.0));
}
