//! `hnsctl events`: what hnsd does, as it happens (`GET /events`), like `docker events`.

use hns_api::Event;

use super::Ctx;
use crate::EventsArgs;
use crate::client::seg;
use crate::error::{CliError, Result};
use crate::output::{Format, print_str};
use crate::template::Column;

/// The fields of `--format '{{.Field}}'`.
pub const EVENT_COLUMNS: &[Column] = &[
    Column::new("TIME", "Time"),
    Column::new("TYPE", "Type"),
    Column::new("ACTION", "Action"),
    Column::new("ID", "ID"),
    Column::new("NAME", "Name"),
    Column::new("NETWORK", "Network"),
    Column::new("OUTCOME", "Outcome"),
    Column::new("ERROR", "Error"),
];

/// The query of `GET /events` for the flags: `--filter KEY=VALUE` as `KEY=VALUE`.
pub fn query(a: &EventsArgs) -> Result<String> {
    let mut parts = Vec::new();
    for f in &a.filter {
        let (k, v) = f
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| CliError::invalid(format!("--filter {f:?}: write KEY=VALUE, e.g. type=endpoint or network=mynat")))?;
        parts.push(format!("{}={}", seg(k), seg(v)));
    }
    for (k, v) in [("since", &a.since), ("until", &a.until)] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", seg(v)));
        }
    }
    Ok(if parts.is_empty() { "/events".to_owned() } else { format!("/events?{}", parts.join("&")) })
}

/// One event as a line of text: `TIME TYPE ACTION ID (name=.., network=.., key=value..) ok`,
/// or `... error: MESSAGE`.
pub fn text(e: &Event) -> String {
    let mut attrs = Vec::new();
    if !e.name.is_empty() {
        attrs.push(format!("name={}", e.name));
    }
    if !e.network.is_empty() && (e.kind != "network" || e.network != e.name) {
        attrs.push(format!("network={}", e.network));
    }
    attrs.extend(e.attributes.iter().map(|(k, v)| format!("{k}={v}")));
    let id = if e.id.is_empty() { "-" } else { e.id.as_str() };
    let attrs = if attrs.is_empty() { String::new() } else { format!(" ({})", attrs.join(", ")) };
    let outcome = if e.is_ok() { "ok".to_owned() } else { format!("error: {}", e.error) };
    format!("{} {} {} {id}{attrs} {outcome}", e.time, e.kind, e.action)
}

fn row(e: &Event) -> Vec<String> {
    vec![e.time.clone(), e.kind.clone(), e.action.clone(), e.id.clone(), e.name.clone(), e.network.clone(), e.outcome.clone(), e.error.clone()]
}

pub fn events(ctx: &Ctx, a: &EventsArgs) -> Result<i32> {
    if let Format::Template(t) = &ctx.format
        && t.is_table()
    {
        return Err(CliError::invalid("hnsctl events prints a line per event: a 'table' template does not apply; drop the word table"));
    }
    let path = query(a)?;
    ctx.client()?.stream_lines(&path, |line| {
        if line.is_empty() {
            return Ok(true);
        }
        let out = match &ctx.format {
            // The line as hnsd sent it: one JSON object per line.
            Format::Json => format!("{}\n", String::from_utf8_lossy(line)),
            other => {
                let e: Event = serde_json::from_slice(line).map_err(|err| CliError::Protocol(format!("hnsd sent an event hnsctl cannot read: {err}")))?;
                match other {
                    Format::Template(t) => t.render(EVENT_COLUMNS, &[row(&e)]).map_err(CliError::invalid)?,
                    _ => format!("{}\n", text(&e)),
                }
            }
        };
        print_str(&out);
        Ok(true)
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_queries() {
        let e = Event { time: "2026-12-05T13:00:00.000000Z".into(), ..Event::ok("endpoint", "attach").object("e1", "web").on_network("n1", "mynat").attr("namespace", "web") };
        assert_eq!(text(&e), "2026-12-05T13:00:00.000000Z endpoint attach e1 (name=web, network=mynat, namespace=web) ok");
        let f = Event { time: "T".into(), ..Event::failed("network", "create", "subnet overlaps (SUBNET_IN_USE)").object("", "blue").on_network("", "blue") };
        assert_eq!(text(&f), "T network create - (name=blue) error: subnet overlaps (SUBNET_IN_USE)");
        let a = EventsArgs { filter: vec!["type=endpoint".into(), "network=my net".into()], since: Some("10m".into()), until: None };
        assert_eq!(query(&a).unwrap(), "/events?type=endpoint&network=my%20net&since=10m");
        let bad = EventsArgs { filter: vec!["endpoint".into()], since: None, until: None };
        assert!(query(&bad).unwrap_err().render().contains("KEY=VALUE"));
    }
}
