"""Syntax-aware chunking and symbol extraction, one literal source per language."""

from context.chunks import ChunkOptions, chunk_source


def spans(file_chunks):
    """(kind, first line, end line, names) per chunk; lines 0-based, end exclusive."""
    return [(c.kind, c.start_line, c.end_line, [s.name for s in c.symbols]) for c in file_chunks.chunks]


PYTHON = '''\
"""Shapes."""
import math
from .units import Meter as M

PI = 3.14


# The unit circle.
@dataclass
class Circle:
    r: float

    def area(self):
        return PI * self.r ** 2


def scale(shape, k):
    def helper(x):
        return x * k
    return helper(shape.r)
'''


def test_python_definitions_get_their_own_chunks_and_comments_join_them():
    result = chunk_source("geo/shapes.py", PYTHON)
    # The docstring, imports and PI form one statement group; the comment and decorator
    # above Circle start its chunk; the nested helper is not a symbol (local to scale).
    assert spans(result) == [
        ("statements", 0, 5, ["PI"]),
        ("definition", 7, 14, ["Circle", "area"]),
        ("definition", 16, 20, ["scale"]),
    ]
    circle = result.chunks[1]
    assert circle.text.startswith("# The unit circle.\n@dataclass\nclass Circle:")
    assert [(s.name, s.kind, s.line, s.container) for s in circle.symbols] == [
        ("Circle", "class", 9, None),
        ("area", "function", 12, "Circle"),
    ]
    imports = [(i.module, i.name, i.alias, i.binding) for i in result.imports]
    assert imports == [("math", None, None, "math"), (".units", "Meter", "M", "M")]


def test_a_big_class_splits_into_header_and_members_small_members_grouped():
    methods = "".join(f"    def m{i}(self):\n        x = {i}\n        return x\n\n" for i in range(6))
    tiny = "    def t1(self): pass\n    def t2(self): pass\n"
    source = "class Big:\n    '''Doc.'''\n    size = 1\n\n" + methods + tiny
    result = chunk_source("big.py", source, ChunkOptions(max_lines=10, max_group_lines=30, min_definition_lines=3))
    kinds = spans(result)
    # The header runs from the class line to the first method (class line, docstring, field, blank
    # line: lines 0-3); each 3-line method is a chunk; the two one-line methods are grouped.
    assert kinds[0] == ("header", 0, 4, ["Big"])
    assert [k[0] for k in kinds[1:]] == ["definition"] * 6 + ["statements"]
    assert [k[3] for k in kinds[1:]] == [[f"m{i}"] for i in range(6)] + [["t1", "t2"]]
    assert all(s.container == "Big" for c in result.chunks[1:] for s in c.symbols)


def test_a_long_function_is_cut_into_windows_that_keep_the_signature_first():
    body = "".join(f"    x{i} = {i}\n" for i in range(25))
    result = chunk_source("long.py", "def long():\n" + body, ChunkOptions(max_lines=10))
    assert [(k, a, b) for k, a, b, _ in spans(result)] == [("definition", 0, 10), ("part", 10, 20), ("part", 20, 26)]
    assert [s.name for s in result.chunks[0].symbols] == ["long"]


JAVASCRIPT = '''\
import parse, { tokenize, Lexer as L } from "./lexer.js";
const fs = require("fs");

export function compile(src) {
  const tokens = tokenize(src);
  return parse(tokens);
}

export const run = (src) => {
  return compile(src);
};

class Machine {
  step() { return 1; }
}
'''


def test_javascript_functions_arrows_and_classes():
    result = chunk_source("src/compiler.js", JAVASCRIPT)
    assert spans(result) == [
        ("imports", 0, 2, []),
        ("definition", 3, 7, ["compile"]),
        ("definition", 8, 11, ["run"]),
        ("definition", 12, 15, ["Machine", "step"]),
    ]
    imports = [(i.module, i.name, i.binding) for i in result.imports]
    assert imports == [
        ("./lexer.js", "default", "parse"),
        ("./lexer.js", "tokenize", "tokenize"),
        ("./lexer.js", "Lexer", "L"),
        ("fs", None, "fs"),
    ]


TYPESCRIPT = '''\
import type { Token } from "./lexer";

export interface Node {
  kind: string;
  children: Node[];
}

export type Visitor = (node: Node) => void;

export abstract class Walker {
  abstract visit(node: Node): void;
  walk(node: Node): void {
    this.visit(node);
  }
}

enum Color { Red, Green }
'''


def test_typescript_interfaces_types_classes_enums():
    result = chunk_source("src/ast.ts", TYPESCRIPT)
    names = [(c.kind, [(s.name, s.kind) for s in c.symbols]) for c in result.chunks]
    assert names == [
        ("imports", []),
        ("definition", [("Node", "interface")]),
        # a one-line type alias is too small for its own chunk: grouped as a statement
        ("statements", [("Visitor", "type")]),
        ("definition", [("Walker", "class"), ("visit", "method"), ("walk", "method")]),
        ("statements", [("Color", "enum")]),
    ]
    assert [(i.module, i.name) for i in result.imports] == [("./lexer", "Token")]


def test_tsx_parses_with_the_tsx_grammar():
    source = "export function App(props: {name: string}) {\n  return <div>{props.name}</div>;\n}\n"
    result = chunk_source("ui/App.tsx", source)
    assert spans(result) == [("definition", 0, 3, ["App"])]


GO = '''\
package geo

import (
	"fmt"
	u "example.com/proj/units"
)

const Pi = 3.14

type Circle struct {
	R float64
}

func (c *Circle) Area() float64 {
	return Pi * c.R * c.R
}

func Describe(c Circle) string {
	return fmt.Sprint(u.Meters(c.R))
}
'''


def test_go_types_methods_with_receiver_container_and_package_imports():
    result = chunk_source("geo/circle.go", GO)
    assert spans(result) == [
        ("statements", 0, 8, ["Pi"]),
        ("definition", 9, 12, ["Circle"]),
        ("definition", 13, 16, ["Area"]),
        ("definition", 17, 20, ["Describe"]),
    ]
    area = result.chunks[2].symbols[0]
    assert (area.kind, area.container) == ("method", "Circle")
    assert result.package == "geo"
    assert [(i.module, i.binding) for i in result.imports] == [("fmt", "fmt"), ("example.com/proj/units", "u")]


RUST = '''\
use crate::units::{Meter, convert as conv};
use super::shapes::*;

/// A circle.
#[derive(Debug)]
pub struct Circle {
    pub r: f64,
}

impl Circle {
    pub fn area(&self) -> f64 {
        3.14 * self.r * self.r
    }
}

pub trait Shape {
    fn area(&self) -> f64;
}
'''


def test_rust_structs_impls_traits_and_use_trees():
    result = chunk_source("src/geo/circle.rs", RUST)
    assert spans(result) == [
        ("imports", 0, 2, []),
        ("definition", 3, 8, ["Circle"]),  # doc comment and attribute join the struct
        ("definition", 9, 14, ["Circle", "area"]),  # the impl is named after its type
        ("definition", 15, 18, ["Shape", "area"]),
    ]
    assert [s.container for s in result.chunks[2].symbols] == [None, "Circle"]
    assert [(i.module, i.name, i.alias, i.wildcard) for i in result.imports] == [
        ("crate::units", "Meter", None, False),
        ("crate::units", "convert", "conv", False),
        ("super::shapes", None, None, True),
    ]


JAVA = '''\
package com.ex.geo;

import com.ex.units.Meter;
import static com.ex.units.Convert.toFeet;
import com.ex.util.*;

public class Circle implements Shape {
    private final double r;

    public Circle(double r) {
        this.r = r;
    }

    public double area() {
        return Math.PI * r * r;
    }
}
'''


def test_java_classes_methods_and_imports():
    result = chunk_source("src/main/java/com/ex/geo/Circle.java", JAVA)
    assert spans(result) == [("imports", 0, 5, []), ("definition", 6, 17, ["Circle", "Circle", "area"])]
    assert result.package == "com.ex.geo"
    assert [(i.module, i.name, i.wildcard) for i in result.imports] == [
        ("com.ex.units", "Meter", False),
        ("com.ex.units.Convert", "toFeet", False),
        ("com.ex.util", None, True),
    ]


def test_unknown_extension_is_an_error_and_empty_files_have_no_chunks():
    import pytest

    with pytest.raises(ValueError, match="no language"):
        chunk_source("notes.txt", "hello")
    assert chunk_source("empty.py", "").chunks == ()
    assert chunk_source("blank.py", "\n\n\n").chunks == ()
