//! Pyroscope's HTTP ingest API for pprof: `POST {URL}/ingest?name=APP{labels}&from=UNIX&
//! until=UNIX&format=pprof&sampleRate=HZ&spyName=gilscope`, the profile in a
//! `multipart/form-data` field named `profile` (as Pyroscope's server API page documents,
//! and as its own Go client sends it). The checks on names, labels, headers and the URL
//! are here too, so a bad value is refused before any sampling.

use super::PushConfig;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ureq::unversioned::multipart::{Form, Part};

/// Connecting may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The whole request (connect, send, answer) may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub const SPY_NAME: &str = "gilscope";
/// The environment variable with more headers, one `Name: value` per line.
pub const HEADERS_ENV: &str = "GILSCOPE_PUSH_HEADERS";

/// A request header; its value is a secret (a token), never shown.
#[derive(Clone)]
pub struct Header {
    pub name: String,
    value: String,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: [hidden]", self.name)
    }
}

impl Header {
    /// Parses `Name: value`. The error never repeats the value.
    pub fn parse(text: &str) -> Result<Header, String> {
        let Some((name, value)) = text.split_once(':') else {
            return Err("a push header must look like 'Name: value'".to_string());
        };
        let name = name.trim();
        let value = value.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(
                "a push header name must be a plain HTTP token, like Authorization".to_string(),
            );
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!(
                "the value of push header {name} has a control character"
            ));
        }
        Ok(Header {
            name: name.to_string(),
            value: value.to_string(),
        })
    }

    /// The headers in [`HEADERS_ENV`]'s text: one per line, blank lines skipped.
    pub fn parse_lines(text: &str) -> Result<Vec<Header>, String> {
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(Header::parse)
            .collect()
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Characters allowed in an application name: Pyroscope's series names.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

pub fn check_app_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err(format!(
            "invalid application name '{name}': use letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// Parses `key=value` for `--push-label`: a Prometheus-style label name, and a value
/// without the characters that delimit the series name (`{`, `}`, `,`, `=`).
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("invalid push label '{text}': expected key=value"));
    };
    let key_ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return Err(format!(
            "invalid push label name '{key}': use letters, digits and '_', not starting with a digit"
        ));
    }
    if value.is_empty() || value.chars().any(|c| "{},=".contains(c) || c.is_control()) {
        return Err(format!(
            "invalid push label value '{value}': it must be non-empty, without {{ }} , ="
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Checks the server URL: plain http (this build has no TLS) and no credentials in it.
/// Returns it without a trailing slash.
pub fn check_url(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            return Err(format!(
                "cannot push to {url}: this gilscope speaks plain http only; push to a \
                 Pyroscope or Grafana Alloy inside the network (see docs/fleet.md)"
            ));
        }
        return Err(format!(
            "invalid push URL '{url}': expected http://HOST[:PORT][/PATH]"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "the push URL must not hold credentials: pass them with --push-header \
             'Authorization: ...' or GILSCOPE_PUSH_HEADERS"
                .to_string(),
        );
    }
    if authority.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "invalid push URL '{url}': expected http://HOST[:PORT][/PATH]"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The series name: `app{k=v,...}` (`app{}` with no labels), as /ingest expects it.
pub fn series_name(app: &str, labels: &[(String, String)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{app}{{{}}}", labels.join(","))
}

/// Why a request failed, and whether trying again may help.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
}

/// One server, with the client and everything fixed across requests.
pub struct Endpoint {
    agent: ureq::Agent,
    url: String,
    name: String,
    sample_rate: String,
    headers: Vec<Header>,
}

impl Endpoint {
    pub fn new(config: &PushConfig, app: &str, rate_hz: f64) -> Endpoint {
        let agent_config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("gilscope/", env!("CARGO_PKG_VERSION")))
            .build();
        Endpoint {
            agent: agent_config.into(),
            url: format!("{}/ingest", config.url),
            name: series_name(app, &config.labels),
            sample_rate: format!("{}", rate_hz.round().max(1.0) as u64),
            headers: config.headers.clone(),
        }
    }

    /// Sends one gzipped pprof profile covering `[from, until)`.
    pub fn send(&self, profile: &[u8], from: SystemTime, until: SystemTime) -> Result<(), Failure> {
        let form = Form::new().part(
            "profile",
            Part::bytes(profile)
                .file_name("profile.pprof")
                .mime_str("application/octet-stream")
                .map_err(|e| Failure {
                    message: e.to_string(),
                    retry: false,
                })?,
        );
        let mut request = self
            .agent
            .post(&self.url)
            .query("name", &self.name)
            .query("from", unix_seconds(from).to_string())
            .query(
                "until",
                unix_seconds(until).max(unix_seconds(from) + 1).to_string(),
            )
            .query("format", "pprof")
            .query("sampleRate", &self.sample_rate)
            .query("spyName", SPY_NAME);
        for header in &self.headers {
            request = request.header(&header.name, &header.value);
        }
        let response = request.send(form).map_err(|e| Failure {
            message: format!("{}: {}", self.url, describe(&e)),
            retry: true,
        })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(Failure {
            message: format!("{} answered HTTP {status}", self.url),
            // A client error other than a timeout or rate limit will not go away by itself.
            retry: !(400..500).contains(&status) || status == 408 || status == 429,
        })
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(what) => format!("timed out ({what})"),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_never_show_their_value() {
        let h = Header::parse("Authorization: Bearer s3cret").unwrap();
        assert_eq!(h.name, "Authorization");
        assert!(!format!("{h:?}").contains("s3cret"));
        let err = Header::parse("Authorization Bearer s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let err = Header::parse("Bad Name: s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let lines = Header::parse_lines("A: 1\n\nX-Scope-OrgID: team\n").unwrap();
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn labels_urls_and_series_names() {
        assert_eq!(
            parse_label("env=prod").unwrap(),
            ("env".to_string(), "prod".to_string())
        );
        assert!(parse_label("env").is_err());
        assert!(parse_label("1env=prod").is_err());
        assert!(parse_label("env=a,b").is_err());
        assert_eq!(check_url("http://pyro:4040/").unwrap(), "http://pyro:4040");
        assert!(check_url("https://pyro:4040").is_err());
        assert!(check_url("http://user:pw@pyro:4040").is_err());
        assert!(check_url("pyro:4040").is_err());
        let labels = vec![
            ("env".to_string(), "prod".to_string()),
            ("region".to_string(), "eu".to_string()),
        ];
        assert_eq!(series_name("api", &labels), "api{env=prod,region=eu}");
        assert_eq!(series_name("api", &[]), "api{}");
        assert!(check_app_name("my-app.v2").is_ok());
        assert!(check_app_name("my app").is_err());
    }
}
