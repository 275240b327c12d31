//! Reading a provider secret: from a file, an environment variable, piped standard input
//! or a hidden prompt — never from a flag value, which would land in shell history and
//! in `ps` output.
//!
//! Bytes read are held in zeroizing buffers and handed on only as a [`SecretString`].
//! Error messages name where the secret was to come from, never what was read.

use std::ffi::OsString;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::cli::SecretFlags;
use crate::error::CliError;

/// The largest secret accepted; anything bigger is almost certainly the wrong file.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Where a secret will be read from, decided from the flags and whether stdin is a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `--secret-file PATH`.
    File(PathBuf),
    /// `--secret-file -`, or no flag with stdin not a terminal.
    Stdin,
    /// `--secret-env VAR`.
    Env(String),
    /// No flag, stdin is a terminal: ask without echo.
    Prompt,
}

impl SecretSource {
    /// Choose the source for `flags`.
    pub fn choose(flags: &SecretFlags, stdin_is_terminal: bool) -> Self {
        match (&flags.secret_file, &flags.secret_env) {
            (Some(path), _) if path.as_os_str() == "-" => SecretSource::Stdin,
            (Some(path), _) => SecretSource::File(path.clone()),
            (None, Some(var)) => SecretSource::Env(var.clone()),
            (None, None) if stdin_is_terminal => SecretSource::Prompt,
            (None, None) => SecretSource::Stdin,
        }
    }

    /// How the source is named in messages.
    fn describe(&self) -> String {
        match self {
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Stdin => "standard input".to_owned(),
            SecretSource::Env(var) => format!("environment variable {var}"),
            SecretSource::Prompt => "the prompt".to_owned(),
        }
    }
}

/// Looks up an environment variable.
type EnvLookup<'a> = Box<dyn Fn(&str) -> Option<OsString> + 'a>;
/// Asks for a secret without echo, showing the given prompt.
type HiddenPrompt<'a> = Box<dyn FnMut(&str) -> std::io::Result<String> + 'a>;

/// Reads secrets; the process's stdin, environment and terminal in production, and
/// stand-ins in tests.
pub struct SecretReader<'a> {
    stdin: Box<dyn Read + 'a>,
    stdin_is_terminal: bool,
    env: EnvLookup<'a>,
    prompt: HiddenPrompt<'a>,
}

impl<'a> SecretReader<'a> {
    /// A reader over the real stdin, environment and terminal.
    pub fn from_process() -> SecretReader<'static> {
        SecretReader {
            stdin: Box::new(std::io::stdin()),
            stdin_is_terminal: std::io::stdin().is_terminal(),
            env: Box::new(|name: &str| std::env::var_os(name)),
            prompt: Box::new(|text: &str| rpassword::prompt_password(text)),
        }
    }

    /// A reader with explicit stand-ins (tests).
    #[cfg(test)]
    pub fn new(
        stdin: impl Read + 'a,
        stdin_is_terminal: bool,
        env: impl Fn(&str) -> Option<OsString> + 'a,
        prompt: impl FnMut(&str) -> std::io::Result<String> + 'a,
    ) -> Self {
        Self { stdin: Box::new(stdin), stdin_is_terminal, env: Box::new(env), prompt: Box::new(prompt) }
    }

    /// Read the secret for `flags`. `what` names it in a prompt ("credential 'openai-prod'").
    ///
    /// One trailing newline (`\n` or `\r\n`) is removed, as a file written by an editor
    /// or `echo` ends with one; an empty or all-whitespace secret is refused.
    pub fn read(&mut self, flags: &SecretFlags, what: &str) -> Result<SecretString, CliError> {
        let source = SecretSource::choose(flags, self.stdin_is_terminal);
        let bytes = match &source {
            SecretSource::File(path) => read_file(path)?,
            SecretSource::Stdin => read_limited(&mut self.stdin, &source)?,
            SecretSource::Env(var) => self.read_env(var)?,
            SecretSource::Prompt => {
                let typed = (self.prompt)(&format!("Secret for {what} (input hidden): ")).map_err(|e| {
                    CliError::Local(format!(
                        "cannot prompt for the secret ({e}); pipe it on standard input, \
                         or use --secret-file FILE or --secret-env VAR"
                    ))
                })?;
                Zeroizing::new(typed.into_bytes())
            }
        };
        finish(bytes, &source)
    }

    fn read_env(&self, var: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
        if var.is_empty() {
            return Err(CliError::Usage("--secret-env needs the name of an environment variable".to_owned()));
        }
        let value = (self.env)(var)
            .ok_or_else(|| CliError::Usage(format!("environment variable {var} (named by --secret-env) is not set")))?;
        let value = value
            .into_string()
            .map_err(|_| CliError::Usage(format!("environment variable {var} does not hold valid UTF-8")))?;
        Ok(Zeroizing::new(value.into_bytes()))
    }
}

fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let file = std::fs::File::open(path).map_err(|source| CliError::ReadFile {
        what: "the secret",
        path: path.to_owned(),
        source,
    })?;
    read_limited(file, &SecretSource::File(path.to_owned()))
}

fn read_limited(reader: impl Read, source: &SecretSource) -> Result<Zeroizing<Vec<u8>>, CliError> {
    // Reserve the whole allowance up front so the buffer never reallocates, which would
    // leave an unzeroed copy of the secret behind in freed memory.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES + 1));
    let limit = u64::try_from(MAX_SECRET_BYTES + 1).unwrap_or(u64::MAX);
    reader
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Local(format!("cannot read the secret from {}: {e}", source.describe())))?;
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(CliError::Usage(format!(
            "the secret read from {} is larger than {} KiB; is this the right input?",
            source.describe(),
            MAX_SECRET_BYTES / 1024
        )));
    }
    Ok(bytes)
}

fn finish(mut bytes: Zeroizing<Vec<u8>>, source: &SecretSource) -> Result<SecretString, CliError> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::Usage(format!("the secret read from {} is not valid UTF-8 text", source.describe())))?;
    if text.trim().is_empty() {
        return Err(CliError::Usage(format!(
            "the secret read from {} is empty; provide the provider key on standard input, \
             or with --secret-file FILE or --secret-env VAR",
            source.describe()
        )));
    }
    Ok(SecretString::from(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use secrecy::ExposeSecret;

    use super::*;

    fn flags(file: Option<&str>, env: Option<&str>) -> SecretFlags {
        SecretFlags { secret_file: file.map(PathBuf::from), secret_env: env.map(str::to_owned) }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn no_prompt(_: &str) -> std::io::Result<String> {
        Err(std::io::Error::other("no terminal in tests"))
    }

    #[test]
    fn source_is_chosen_from_flags_then_terminal() {
        let cases = [
            (flags(Some("-"), None), true, SecretSource::Stdin),
            (flags(Some("k.txt"), None), false, SecretSource::File("k.txt".into())),
            (flags(None, Some("KEY")), true, SecretSource::Env("KEY".into())),
            (flags(None, None), false, SecretSource::Stdin),
            (flags(None, None), true, SecretSource::Prompt),
        ];
        for (f, tty, expected) in cases {
            assert_eq!(SecretSource::choose(&f, tty), expected, "{f:?} tty={tty}");
        }
    }

    #[test]
    fn reads_piped_stdin_and_strips_one_newline() {
        let cases: [(&[u8], &str); 4] = [
            (b"sk-canary-pipe\n", "sk-canary-pipe"),
            (b"sk-canary-pipe\r\n", "sk-canary-pipe"),
            (b"sk-canary-pipe", "sk-canary-pipe"),
            (b"sk-canary-pipe\n\n", "sk-canary-pipe\n"),
        ];
        for (input, expected) in cases {
            let mut reader = SecretReader::new(input, false, no_env, no_prompt);
            let secret = reader.read(&flags(None, None), "test").unwrap();
            assert_eq!(secret.expose_secret(), expected);
        }
    }

    #[test]
    fn reads_a_file_and_dash_means_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        std::fs::File::create(&path).unwrap().write_all(b"sk-canary-file\n").unwrap();
        let mut reader = SecretReader::new(&b"sk-canary-stdin"[..], true, no_env, no_prompt);
        let from_file = reader.read(&flags(path.to_str(), None), "test").unwrap();
        assert_eq!(from_file.expose_secret(), "sk-canary-file");
        let from_dash = reader.read(&flags(Some("-"), None), "test").unwrap();
        assert_eq!(from_dash.expose_secret(), "sk-canary-stdin");
    }

    #[test]
    fn reads_an_env_var() {
        let env = |name: &str| (name == "OPENAI_KEY").then(|| OsString::from("sk-canary-env"));
        let mut reader = SecretReader::new(&b""[..], false, env, no_prompt);
        let secret = reader.read(&flags(None, Some("OPENAI_KEY")), "test").unwrap();
        assert_eq!(secret.expose_secret(), "sk-canary-env");
        let missing = reader.read(&flags(None, Some("NOPE")), "test").unwrap_err();
        assert!(missing.to_string().contains("NOPE"), "{missing}");
        assert!(missing.to_string().contains("not set"), "{missing}");
    }

    #[test]
    fn prompts_only_on_a_terminal() {
        let mut asked = Vec::new();
        let prompt = |text: &str| {
            asked.push(text.to_owned());
            Ok("sk-canary-typed".to_owned())
        };
        let mut reader = SecretReader::new(&b""[..], true, no_env, prompt);
        let secret = reader.read(&flags(None, None), "credential 'openai-prod'").unwrap();
        assert_eq!(secret.expose_secret(), "sk-canary-typed");
        drop(reader);
        assert_eq!(asked, ["Secret for credential 'openai-prod' (input hidden): "]);
    }

    #[test]
    fn refuses_empty_oversized_and_missing_input_without_echoing_it() {
        let big = vec![b'k'; MAX_SECRET_BYTES + 1];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "is empty"),
            (b"\n".to_vec(), "is empty"),
            (b"  \t\n".to_vec(), "is empty"),
            (big, "larger than"),
            (vec![0xff, 0xfe, b'x'], "not valid UTF-8"),
        ];
        for (input, expected) in cases {
            let mut reader = SecretReader::new(&input[..], false, no_env, no_prompt);
            let err = reader.read(&flags(None, None), "test").unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(err.to_string().contains("standard input"), "{err}");
            assert!(!err.to_string().contains("kkkk"), "error echoes the input");
        }
        let mut reader = SecretReader::new(&b""[..], false, no_env, no_prompt);
        let err = reader.read(&flags(Some("/nonexistent/key.txt"), None), "test").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/key.txt"), "{err}");
    }

    #[test]
    fn the_secret_type_does_not_print() {
        let mut reader = SecretReader::new(&b"sk-canary-debug\n"[..], false, no_env, no_prompt);
        let secret = reader.read(&flags(None, None), "test").unwrap();
        assert!(!format!("{secret:?}").contains("sk-canary-debug"));
    }
}
