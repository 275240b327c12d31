//! The real `byok` CLI binary, run against one server, every output remembered.

use std::cell::RefCell;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{clean_command, Server};

/// One CLI run.
#[derive(Debug, Clone)]
pub struct Run {
    pub argv: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}): {}", self.argv, self.stdout))
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "`byok {}` failed:\n{}\n{}", self.argv, self.stdout, self.stderr);
        self
    }

    pub fn fails(self, code: i32, needles: &[&str]) -> Self {
        assert_eq!(self.code, code, "`byok {}`: wrong exit code:\n{}\n{}", self.argv, self.stdout, self.stderr);
        for needle in needles {
            assert!(self.stderr.contains(needle), "`byok {}`: '{needle}' not in stderr: {}", self.argv, self.stderr);
        }
        self
    }
}

/// Runs the CLI against one server and remembers every output.
pub struct Cli<'a> {
    server: &'a Server,
    /// Every run so far, to search for secrets at the end.
    pub runs: RefCell<Vec<Run>>,
}

impl<'a> Cli<'a> {
    pub fn new(server: &'a Server) -> Self {
        Self { server, runs: RefCell::new(Vec::new()) }
    }

    /// `byok ARGV` against the server, finding its operator token through `--data-dir`.
    pub fn run(&self, argv: &str) -> Run {
        self.run_with(argv, None, &[])
    }

    pub fn run_with(&self, argv: &str, stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let mut command = clean_command();
        command
            .args(["--admin-url", &self.server.admin_url])
            .arg("--data-dir")
            .arg(self.server.data_dir.path())
            .args(argv.split_whitespace());
        self.exec(argv, command, stdin, env)
    }

    /// `byok ARGV` with nothing added.
    pub fn run_bare(&self, argv: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = clean_command();
        command.args(argv);
        self.exec(&argv.join(" "), command, None, env)
    }

    fn exec(&self, argv: &str, mut command: Command, stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        for (key, value) in env {
            command.env(key, value);
        }
        // Stdin is never the test's terminal, so the CLI never waits on a prompt.
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).unwrap();
        }
        drop(pipe);
        let output = child.wait_with_output().unwrap();
        let run = Run {
            argv: argv.to_owned(),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.runs.borrow_mut().push(run.clone());
        run
    }
}
