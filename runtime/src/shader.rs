//! WGSL sources and variants.
//!
//! A [`Shader`] is one kernel family: its `shaders/<family>.wgsl` file, optionally preceded by shared
//! WGSL (the weight formats). Variants come from [`Defines`]: each define becomes a WGSL
//! `const NAME: u32`, and `#if EXPR` / `#elif EXPR` / `#else` / `#endif` lines (EXPR: names, `!NAME`,
//! `&&`, `||`; a name is true when set and nonzero) keep or drop
//! the text between them (as llama.cpp's WebGPU backend does with its templates). naga_oil would do
//! this too, but it pins an older naga than wgpu's.

use std::fmt;

use crate::error::{Result, RuntimeError};

/// One kernel family's WGSL: the parts are concatenated in order.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    pub name: &'static str,
    pub parts: &'static [&'static str],
}

/// Named u32 constants that select a variant; kept sorted so equal sets hash equally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Defines(Vec<(&'static str, u32)>);

impl Defines {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value` (replacing an earlier value).
    pub fn set(mut self, name: &'static str, value: u32) -> Self {
        match self.0.binary_search_by_key(&name, |(n, _)| n) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
        self
    }

    /// Sets `name` to 1.
    pub fn flag(self, name: &'static str) -> Self {
        self.set(name, 1)
    }

    /// The value of `name`, 0 when unset.
    pub fn get(&self, name: &str) -> u32 {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Defines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("default");
        }
        let parts: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// Produces the WGSL of one variant: `enable` directives first, then the defines as constants,
/// then the sources with the `#if` blocks resolved.
pub fn preprocess(shader: &Shader, defines: &Defines) -> Result<String> {
    struct Frame {
        parent_active: bool,
        active: bool,
        taken: bool,
    }
    let err = |line: usize, message: &str| RuntimeError::Preprocess {
        shader: shader.name,
        line,
        message: message.to_string(),
    };
    // Names joined by `&&` (binding first) and `||`, each maybe negated by `!`: nothing else, so
    // that a parenthesis or a typo is an error rather than a name that is never defined.
    let check = |line: usize, expr: &str| {
        let names = expr.split("||").flat_map(|all| all.split("&&"));
        let bad = names
            .map(|t| t.trim())
            .map(|t| t.strip_prefix('!').unwrap_or(t).trim())
            .find(|name| {
                name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        match bad {
            Some(name) => Err(err(line, &format!("bad name {name:?} in {expr:?}"))),
            None => Ok(()),
        }
    };
    let eval = |expr: &str| -> bool {
        expr.split("||").any(|all| {
            all.split("&&").all(|term| {
                let term = term.trim();
                match term.strip_prefix('!') {
                    Some(name) => defines.get(name.trim()) == 0,
                    None => defines.get(term) != 0,
                }
            })
        })
    };

    let mut enables = String::new();
    let mut body = String::new();
    let mut stack: Vec<Frame> = Vec::new();
    let text = shader.parts.join("\n");
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let active = stack.last().is_none_or(|f| f.active);
        let trimmed = line.trim_start();
        if let Some(expr) = trimmed.strip_prefix("#if ") {
            check(number, expr)?;
            let on = active && eval(expr);
            stack.push(Frame {
                parent_active: active,
                active: on,
                taken: on,
            });
        } else if let Some(expr) = trimmed.strip_prefix("#elif ") {
            check(number, expr)?;
            let frame = stack
                .last_mut()
                .ok_or_else(|| err(number, "#elif without #if"))?;
            frame.active = frame.parent_active && !frame.taken && eval(expr);
            frame.taken |= frame.active;
        } else if trimmed.starts_with("#else") {
            let frame = stack
                .last_mut()
                .ok_or_else(|| err(number, "#else without #if"))?;
            frame.active = frame.parent_active && !frame.taken;
            frame.taken = true;
        } else if trimmed.starts_with("#endif") {
            stack
                .pop()
                .ok_or_else(|| err(number, "#endif without #if"))?;
        } else if trimmed.starts_with('#') {
            return Err(err(number, &format!("unknown directive {trimmed:?}")));
        } else if active {
            let target = if trimmed.starts_with("enable ") {
                &mut enables
            } else {
                &mut body
            };
            target.push_str(line);
            target.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(err(text.lines().count(), "unterminated #if"));
    }
    let mut out = enables;
    for (name, value) in defines.iter() {
        out.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    out.push_str(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_nested_blocks_and_hoists_enables() {
        static SRC: Shader = Shader {
            name: "t",
            parts: &[
                "#if A\nenable f16;\n#endif\nx\n#if A\n#if !B\ny\n#else\nz\n#endif\n#elif C && !A || D\nc\n#else\nw\n#endif",
            ],
        };
        let a = preprocess(&SRC, &Defines::new().flag("A")).unwrap();
        assert_eq!(a, "enable f16;\nconst A: u32 = 1u;\nx\ny\n");
        let ab = preprocess(&SRC, &Defines::new().flag("A").flag("B")).unwrap();
        assert!(ab.ends_with("x\nz\n"), "{ab}");
        let c = preprocess(&SRC, &Defines::new().flag("C")).unwrap();
        assert!(c.ends_with("x\nc\n") && !c.contains("enable"), "{c}");
        let none = preprocess(&SRC, &Defines::new()).unwrap();
        assert_eq!(none, "x\nw\n");
    }

    #[test]
    fn unbalanced_blocks_are_errors() {
        static BAD: Shader = Shader {
            name: "bad",
            parts: &["#if A\nx"],
        };
        assert!(matches!(
            preprocess(&BAD, &Defines::new()),
            Err(RuntimeError::Preprocess { .. })
        ));
        static BAD2: Shader = Shader {
            name: "bad2",
            parts: &["x\n#endif"],
        };
        assert!(matches!(
            preprocess(&BAD2, &Defines::new()),
            Err(RuntimeError::Preprocess { line: 2, .. })
        ));
        // Parentheses and double negation are not supported: errors, not names never defined.
        static BAD4: Shader = Shader {
            name: "bad4",
            parts: &["#if !!A\ny\n#endif"],
        };
        assert!(matches!(
            preprocess(&BAD4, &Defines::new()),
            Err(RuntimeError::Preprocess { line: 1, .. })
        ));
        static BAD3: Shader = Shader {
            name: "bad3",
            parts: &["x
#if (A || B) && C
y
#endif"],
        };
        assert!(matches!(
            preprocess(&BAD3, &Defines::new()),
            Err(RuntimeError::Preprocess { line: 2, .. })
        ));
    }

    #[test]
    fn defines_are_order_independent() {
        let a = Defines::new().set("X", 2).flag("Y");
        let b = Defines::new().flag("Y").set("X", 1).set("X", 2);
        assert_eq!(a, b);
        assert_eq!(a.get("X"), 2);
        assert_eq!(a.get("Z"), 0);
        assert_eq!(a.to_string(), "X=2,Y=1");
    }
}
