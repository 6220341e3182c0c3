//! `--format` templates of the commands that list rows, in docker's `{{.Field}}` form:
//! `--format '{{.ID}}\t{{.Name}}'` prints one line per row, `--format 'table {{.Name}}\t{{.Driver}}'`
//! aligned columns under their headers. The fields are the table's columns (see [`Column`]).
//! As docker does, a written `\t` or `\n` stands for a tab or a newline.
//!
//! Written by hand (about 100 lines): only field substitution is offered, and the one Rust crate
//! for Go templates, gtmpl, is a whole text/template engine (some 5 000 lines, last released in
//! 2021) whose functions, pipelines and conditionals none of these tables needs.

use crate::output::render_table;

/// One column of a list: its table header and its template field (docker's name for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub header: &'static str,
    pub field: &'static str,
}

impl Column {
    pub const fn new(header: &'static str, field: &'static str) -> Column {
        Column { header, field }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `table ...`: aligned columns with a header line.
    table: bool,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `[table ]TEXT{{.Field}}TEXT...`; the error says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let unescaped = text.replace("\\t", "\t").replace("\\n", "\n");
        let (table, body) = match unescaped.strip_prefix("table ") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, unescaped.as_str()),
        };
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| format!("the {{{{ of {text:?} has no }}}}; write {{{{.Field}}}}, e.g. {{{{.Name}}}}"))?;
            let inner = after[..close].trim();
            let name = inner
                .strip_prefix('.')
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .ok_or_else(|| format!("{{{{{inner}}}}} is not a field; only fields are supported: {{{{.Field}}}}, e.g. {{{{.Name}}}}"))?;
            parts.push(Part::Field(name.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(format!("{text:?} names no field; write {{{{.Field}}}}, e.g. {{{{.Name}}}}"));
        }
        Ok(Template { table, parts })
    }

    /// `table ...`: columns under a header line.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Renders the rows (cells in the order of `columns`). A field that is not a column is an
    /// error naming the fields there are.
    pub fn render(&self, columns: &[Column], rows: &[Vec<String>]) -> Result<String, String> {
        let mut index = Vec::new();
        for part in &self.parts {
            if let Part::Field(name) = part {
                let i = columns.iter().position(|c| c.field == name).ok_or_else(|| {
                    let fields: Vec<String> = columns.iter().map(|c| format!(".{}", c.field)).collect();
                    format!("--format: there is no field .{name} here; the fields are {}", fields.join(" "))
                })?;
                index.push(i);
            }
        }
        let line = |cell: &dyn Fn(usize) -> String| {
            let mut fields = index.iter();
            self.parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.clone(),
                    Part::Field(_) => cell(*fields.next().expect("one index per field")),
                })
                .collect::<String>()
        };
        let lines: Vec<String> = rows.iter().map(|row| line(&|i| row.get(i).cloned().unwrap_or_default())).collect();
        if !self.table {
            return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
        }
        // Tabs separate the columns of a table template, as in docker's.
        let header = line(&|i| columns[i].header.to_owned());
        let headers: Vec<&str> = header.split('\t').collect();
        let cells: Vec<Vec<String>> = lines.iter().map(|l| l.split('\t').map(str::to_owned).collect()).collect();
        Ok(render_table(&headers, &cells))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[Column::new("NETWORK ID", "ID"), Column::new("NAME", "Name"), Column::new("DRIVER", "Driver")];

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["5a3d0f6e9c1b".into(), "nat".into(), "nat".into()],
            vec!["0b1c2d3e4f50".into(), "lan".into(), "transparent".into()],
        ]
    }

    fn render(t: &str) -> String {
        Template::parse(t).unwrap().render(COLUMNS, &rows()).unwrap()
    }

    #[test]
    fn fields_are_substituted_per_row() {
        assert_eq!(render("{{.Name}}"), "nat\nlan\n");
        assert_eq!(render("{{.Name}}\\t{{.ID}}"), "nat\t5a3d0f6e9c1b\nlan\t0b1c2d3e4f50\n");
        assert_eq!(render("net={{ .Name }} ({{.Driver}})"), "net=nat (nat)\nnet=lan (transparent)\n");
        assert_eq!(render("{{.Name}}{{.Name}}"), "natnat\nlanlan\n");
        assert_eq!(Template::parse("{{.Name}}").unwrap().render(COLUMNS, &[]).unwrap(), "");
    }

    #[test]
    fn table_templates_align_under_headers() {
        assert_eq!(render("table {{.Name}}\\t{{.Driver}}"), "NAME   DRIVER\nnat    nat\nlan    transparent\n");
        assert_eq!(Template::parse("table {{.ID}}").unwrap().render(COLUMNS, &[]).unwrap(), "NETWORK ID\n");
    }

    #[test]
    fn errors_name_the_rule() {
        let e = Template::parse("{{.Subnet}}").unwrap().render(COLUMNS, &rows()).unwrap_err();
        assert_eq!(e, "--format: there is no field .Subnet here; the fields are .ID .Name .Driver");
        assert!(Template::parse("{{.Name").unwrap_err().contains("has no }}"));
        assert!(Template::parse("{{Name}}").unwrap_err().contains("{{Name}} is not a field"));
        assert!(Template::parse("{{json .}}").unwrap_err().contains("only fields are supported"));
        assert!(Template::parse("{{.}}").unwrap_err().contains("is not a field"));
        assert!(Template::parse("plain").unwrap_err().contains("names no field"));
    }
}
