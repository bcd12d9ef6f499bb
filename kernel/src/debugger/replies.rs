//! The DAP responses the kernel writes itself, and what the variables panel
//! shows of the user's names.

use serde_json::{json, Value};

/// Globals the variables panel leaves out (ipykernel's list).
const HIDDEN_VARIABLES: &[&str] = &[
    "__name__",
    "__doc__",
    "__package__",
    "__loader__",
    "__spec__",
    "__annotations__",
    "__builtins__",
    "__builtin__",
    "__display__",
    "get_ipython",
    "debugpy",
    "exit",
    "quit",
    "In",
    "Out",
    "_oh",
    "_dh",
    "_",
    "__",
    "___",
];

/// A response to `request` with no body yet.
pub fn response(request: &Value, success: bool) -> Value {
    json!({
        "type": "response",
        "seq": request["seq"],
        "request_seq": request["seq"],
        "command": request["command"],
        "success": success,
    })
}

pub fn failure(request: &Value, message: &str) -> Value {
    let mut reply = response(request, false);
    reply["message"] = Value::from(message);
    reply["body"] = json!({});
    reply
}

/// Whether `name` is a Python identifier: only such names are put into
/// code evaluated in the user's frame.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

pub fn visible(variable: &Value) -> bool {
    let name = variable["name"].as_str().unwrap_or_default();
    let numbered_output =
        name.starts_with('_') && name[1..].starts_with(|c: char| c.is_ascii_digit());
    !HIDDEN_VARIABLES.contains(&name) && !numbered_output && !name.starts_with("_i")
}

pub fn variables_response(request: &Value, variables: Vec<Value>) -> Value {
    let mut reply = response(request, true);
    let shown: Vec<Value> = variables.into_iter().filter(visible).collect();
    reply["body"] = json!({ "variables": shown });
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_python_names_are_identifiers() {
        assert!(is_identifier("x"));
        assert!(is_identifier("_private2"));
        assert!(is_identifier("données"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("2x"));
        assert!(!is_identifier("special variables"));
        assert!(!is_identifier("x);import os;("));
    }

    #[test]
    fn the_variables_panel_hides_ipython_bookkeeping() {
        let names =
            |list: &[&str]| -> Vec<Value> { list.iter().map(|n| json!({"name": n})).collect() };
        let request = json!({"seq": 4, "command": "inspectVariables"});
        let reply = variables_response(
            &request,
            names(&[
                "a",
                "In",
                "_3",
                "_i3",
                "__name__",
                "get_ipython",
                "_x",
                "df",
            ]),
        );
        assert_eq!(reply["body"]["variables"], json!(names(&["a", "_x", "df"])));
        assert_eq!(reply["request_seq"], 4);
        assert_eq!(reply["success"], true);
    }
}
