//! Slurm's and Flux's compressed host lists (`node[1-2,05-07],gpu01`)
//! expanded into host names, in order. `scontrol show hostnames` is the
//! reference: ranges keep the zero padding of their first number
//! (`n[08-10]` is n08 n09 n10), several brackets multiply (`r[1-2]n[1-2]`
//! is r1n1 r1n2 r2n1 r2n2), empty entries are skipped; a name may go on
//! after a bracket (`a[1-2]b`), which newer Slurm writes and Flux allows.

/// More names than this is a mistake (a range of a billion), not an
/// allocation: refused before it takes the memory.
const MOST_HOSTS: usize = 1 << 20;

/// The host names `list` stands for, or what in it is wrong.
pub fn expand(list: &str) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for entry in top_level_entries(list)? {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let mut names = vec![String::new()];
        for part in parts(entry) {
            let choices = match part {
                Part::Text(text) => vec![text.to_string()],
                Part::Ranges(ranges) => numbers(ranges)?,
            };
            if names.len().saturating_mul(choices.len()) + hosts.len() > MOST_HOSTS {
                return Err(format!("{entry:?} names more than {MOST_HOSTS} hosts"));
            }
            names = names
                .iter()
                .flat_map(|name| choices.iter().map(move |choice| format!("{name}{choice}")))
                .collect();
        }
        hosts.extend(names);
    }
    Ok(hosts)
}

/// `list` split at the commas outside brackets.
fn top_level_entries(list: &str) -> Result<Vec<&str>, String> {
    let mut entries = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (at, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(format!("{list:?} has a bracket inside a bracket")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(format!("{list:?} closes a bracket it never opened")),
            ',' if depth == 0 => {
                entries.push(&list[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{list:?} leaves a bracket open"));
    }
    entries.push(&list[start..]);
    Ok(entries)
}

enum Part<'a> {
    Text(&'a str),
    /// What a pair of brackets holds: `1-2,05-07`.
    Ranges(&'a str),
}

/// One entry (brackets balanced, none nested) as text and bracket parts.
fn parts(entry: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    let mut rest = entry;
    while let Some(open) = rest.find('[') {
        let close = open + rest[open..].find(']').expect("brackets are balanced");
        parts.push(Part::Text(&rest[..open]));
        parts.push(Part::Ranges(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    parts.push(Part::Text(rest));
    parts
}

/// The numbers of `ranges` (`1-2,05-07`), each as wide as its range's
/// first number (zero padded).
fn numbers(ranges: &str) -> Result<Vec<String>, String> {
    let mut numbers = Vec::new();
    for range in ranges.split(',') {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        let (Some(first), Some(last)) = (number(low), number(high)) else {
            return Err(format!(
                "[{ranges}] holds {range:?}, which is not a number or a range of numbers \
                 such as 1-4 or 05-07"
            ));
        };
        if first > last {
            return Err(format!(
                "[{ranges}] holds the range {range:?}, which goes down"
            ));
        }
        if numbers.len() as u64 + (last - first) >= MOST_HOSTS as u64 {
            return Err(format!("[{ranges}] names more than {MOST_HOSTS} hosts"));
        }
        let width = low.len();
        numbers.extend((first..=last).map(|n| format!("{n:0width$}")));
    }
    Ok(numbers)
}

fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        expand(list).unwrap()
    }

    #[test]
    fn ranges_keep_the_padding_of_their_first_number() {
        assert_eq!(
            names("node[1-2,05-07],gpu01"),
            ["node1", "node2", "node05", "node06", "node07", "gpu01"]
        );
        assert_eq!(names("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(names("n[098-100]"), ["n098", "n099", "n100"]);
        assert_eq!(names("n[01-1]"), ["n01"]);
        assert_eq!(names("n[1-01]"), ["n1"]);
    }

    #[test]
    fn brackets_multiply_and_a_name_goes_on_after_one() {
        assert_eq!(
            names("r[1-2]n[01-02]"),
            ["r1n01", "r1n02", "r2n01", "r2n02"]
        );
        assert_eq!(names("a[1-2]b,c"), ["a1b", "a2b", "c"]);
        assert_eq!(names("a[1-2]-ib"), ["a1-ib", "a2-ib"]);
    }

    #[test]
    fn plain_names_in_order_repeats_kept_empty_entries_skipped() {
        assert_eq!(names("x[1-2],x1"), ["x1", "x2", "x1"]);
        assert_eq!(names("n1,,n2"), ["n1", "n2"]);
        assert_eq!(names(" vm,vm"), ["vm", "vm"]);
        assert_eq!(names("[1-2]"), ["1", "2"], "as scontrol reads it");
        assert!(names("").is_empty());
    }

    #[test]
    fn what_is_not_a_host_list_is_named() {
        for (list, why) in [
            ("n[3-1]", "goes down"),
            ("n[a-b]", "not a number"),
            ("n[]", "not a number"),
            ("n[1-]", "not a number"),
            ("n[1-3", "leaves a bracket open"),
            ("n1-3]", "never opened"),
            ("n[1[2]]", "inside a bracket"),
            ("n[0-99999999999]", "more than"),
            ("n[0-999]m[0-9999]", "more than"),
        ] {
            let error = expand(list).unwrap_err();
            assert!(error.contains(why), "{list}: {error}");
        }
    }
}
