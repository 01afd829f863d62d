//! Parsing of `Authorization` / `Proxy-Authorization: Digest ...` values.

/// The parameters of a Digest response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`
    pub username: String,
    /// `realm`
    pub realm: String,
    /// `nonce`
    pub nonce: String,
    /// `uri` (digest-uri)
    pub uri: String,
    /// `response`
    pub response: String,
    /// `algorithm`, if sent
    pub algorithm: Option<String>,
    /// `qop`, if sent
    pub qop: Option<String>,
    /// `cnonce`, if sent
    pub cnonce: Option<String>,
    /// `nc`, if sent
    pub nc: Option<String>,
    /// `opaque`, if sent
    pub opaque: Option<String>,
}

/// Splits `a=b, c="d, e"` into pairs, honouring quotes and backslash escapes.
fn split_params(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("parameter without '=' near {:?}", truncate(rest)))?;
        let name = rest[..eq].trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
            return Err(format!("bad parameter name near {:?}", truncate(rest)));
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end.ok_or("unterminated quoted string")?;
            value = out;
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        params.push((name, value));
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected ',' near {:?}", truncate(rest)));
        }
    }
    Ok(params)
}

fn truncate(text: &str) -> String {
    text.chars().take(24).collect()
}

/// Parses a `Digest ...` credentials value.
pub fn parse_credentials(value: &str) -> Result<Credentials, String> {
    let value = value.trim();
    let scheme_end = value.find(char::is_whitespace).unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case("digest") {
        return Err("scheme is not Digest".into());
    }
    let params = split_params(&value[scheme_end..])?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let required = |name: &str| get(name).ok_or_else(|| format!("missing {name}"));
    Ok(Credentials {
        username: required("username")?,
        realm: required("realm")?,
        nonce: required("nonce")?,
        uri: required("uri")?,
        response: required("response")?,
        algorithm: get("algorithm"),
        qop: get("qop"),
        cnonce: get("cnonce"),
        nc: get("nc"),
        opaque: get("opaque"),
    })
}
