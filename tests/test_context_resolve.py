"""Import resolution per language, on tiny literal repositories."""

from pathlib import Path

from context.index import build_index
from context.resolve import module_files, resolve_attribute, resolve_import, same_package_definitions
from context.symbols import Import


def write(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def imported(index, path: str, binding: str) -> Import:
    return next(i for i in index.files[path].imports if i.binding == binding)


def where(target) -> list[tuple[str, str, int]]:
    return [(r.path, r.symbol.name, r.symbol.line) for r in target.definitions]


def test_python_relative_absolute_submodule_and_reexport(tmp_path):
    write(tmp_path, {
        "geo/__init__.py": "from .shapes import Circle\nfrom .units import *\n",
        "geo/shapes.py": "class Circle:\n    def area(self):\n        return 1\n",
        "geo/units.py": "METER = 1.0\n",
        "geo/sub/calc.py": (
            "from ..shapes import Circle\n"  # two dots: the parent package
            "from geo import Circle as C2\n"  # absolute, through the re-export in __init__
            "from geo import units\n"  # a submodule, not a name
            "from geo import METER\n"  # through `from .units import *`
            "import geo.shapes as gs\n"
        ),
    })
    index = build_index(tmp_path)
    calc = "geo/sub/calc.py"
    assert where(resolve_import(index, calc, imported(index, calc, "Circle"))) == [("geo/shapes.py", "Circle", 0)]
    assert where(resolve_import(index, calc, imported(index, calc, "C2"))) == [("geo/shapes.py", "Circle", 0)]
    assert resolve_import(index, calc, imported(index, calc, "units")).modules == ("geo/units.py",)
    assert where(resolve_import(index, calc, imported(index, calc, "METER"))) == [("geo/units.py", "METER", 0)]
    module = resolve_import(index, calc, imported(index, calc, "gs"))
    assert module.modules == ("geo/shapes.py",)
    # gs.Circle.area: attribute of a module, then member of a class.
    circle = resolve_attribute(index, module, "Circle")
    assert where(resolve_attribute(index, circle, "area")) == [("geo/shapes.py", "area", 1)]


def test_python_absolute_import_prefers_the_closest_of_same_named_modules(tmp_path):
    write(tmp_path, {
        "src/app/util.py": "def helper():\n    pass\n",
        "tests/app/util.py": "def helper():\n    pass\n",
        "src/app/main.py": "from app.util import helper\n",
    })
    index = build_index(tmp_path)
    assert module_files(index, "src/app/main.py", "app.util") == ["src/app/util.py"]


def test_javascript_and_typescript_relative_imports_with_extensions_and_index_files(tmp_path):
    write(tmp_path, {
        "src/lib/lexer.ts": "export function tokenize(s: string) {\n  return s;\n}\n",
        "src/lib/index.ts": 'export { tokenize } from "./lexer";\n',
        "src/util.js": "export default function slugify(s) {\n  return s;\n}\n",
        "src/app.ts": (
            'import { tokenize } from "./lib";\n'  # a directory: its index.ts, then the re-export
            'import slug from "./util.js";\n'  # default export, bound under another name
            'import * as lex from "./lib/lexer";\n'
            'import React from "react";\n'  # a package: not in the repository
        ),
    })
    index = build_index(tmp_path)
    app = "src/app.ts"
    assert where(resolve_import(index, app, imported(index, app, "tokenize"))) == [("src/lib/lexer.ts", "tokenize", 0)]
    assert where(resolve_import(index, app, imported(index, app, "slug"))) == [("src/util.js", "slugify", 0)]
    assert resolve_import(index, app, imported(index, app, "lex")).modules == ("src/lib/lexer.ts",)
    assert not resolve_import(index, app, imported(index, app, "React"))


def test_go_package_imports_resolve_by_directory_and_same_package_needs_no_import(tmp_path):
    write(tmp_path, {
        "go.mod": "module example.com/proj\n",
        "units/units.go": "package units\n\nfunc Meters(x float64) float64 {\n\treturn x\n}\n",
        "geo/circle.go": 'package geo\n\nimport "example.com/proj/units"\n\nfunc Area() float64 {\n\treturn units.Meters(Pi)\n}\n',
        "geo/consts.go": "package geo\n\nconst Pi = 3.14\n",
    })
    index = build_index(tmp_path)
    units = resolve_import(index, "geo/circle.go", imported(index, "geo/circle.go", "units"))
    assert units.modules == ("units/units.go",)
    assert where(resolve_attribute(index, units, "Meters")) == [("units/units.go", "Meters", 2)]
    assert [(r.path, r.symbol.name) for r in same_package_definitions(index, "geo/circle.go", "Pi")] == [("geo/consts.go", "Pi")]


def test_rust_crate_super_and_self_paths(tmp_path):
    write(tmp_path, {
        "Cargo.toml": "[package]\nname = 'geo'\n",
        "src/lib.rs": "pub mod shapes;\npub mod units;\n",
        "src/units.rs": "pub fn meters(x: f64) -> f64 {\n    x\n}\n",
        "src/shapes/mod.rs": "pub mod circle;\npub struct Square {\n    pub s: f64,\n}\n",
        "src/shapes/circle.rs": (
            "use crate::units::meters;\n"
            "use super::Square;\n"
            "use self::inner::Helper;\n"
            "use crate::units;\n"
        ),
        "src/shapes/circle/inner.rs": "pub struct Helper {\n    x: i32,\n}\n",
    })
    index = build_index(tmp_path)
    circle = "src/shapes/circle.rs"
    assert where(resolve_import(index, circle, imported(index, circle, "meters"))) == [("src/units.rs", "meters", 0)]
    assert where(resolve_import(index, circle, imported(index, circle, "Square"))) == [("src/shapes/mod.rs", "Square", 1)]
    assert where(resolve_import(index, circle, imported(index, circle, "Helper"))) == [("src/shapes/circle/inner.rs", "Helper", 0)]
    assert resolve_import(index, circle, imported(index, circle, "units")).modules == ("src/units.rs",)


def test_java_class_static_and_wildcard_imports_and_same_package(tmp_path):
    base = "src/main/java/com/ex"
    write(tmp_path, {
        f"{base}/units/Meter.java": "package com.ex.units;\n\npublic class Meter {\n    double v;\n}\n",
        f"{base}/units/Convert.java": (
            "package com.ex.units;\n\npublic class Convert {\n"
            "    public static double toFeet(double m) {\n        return m * 3.28;\n    }\n}\n"
        ),
        f"{base}/geo/Shape.java": "package com.ex.geo;\n\npublic interface Shape {\n    double area();\n}\n",
        f"{base}/geo/Circle.java": (
            "package com.ex.geo;\n\nimport com.ex.units.Meter;\nimport static com.ex.units.Convert.toFeet;\n"
            "import com.ex.units.*;\n\npublic class Circle implements Shape {\n}\n"
        ),
    })
    index = build_index(tmp_path)
    circle = f"{base}/geo/Circle.java"
    assert where(resolve_import(index, circle, imported(index, circle, "Meter"))) == [(f"{base}/units/Meter.java", "Meter", 2)]
    assert where(resolve_import(index, circle, imported(index, circle, "toFeet"))) == [(f"{base}/units/Convert.java", "toFeet", 3)]
    wildcard = next(i for i in index.files[circle].imports if i.wildcard)
    assert set(resolve_import(index, circle, wildcard).modules) == {f"{base}/units/Meter.java", f"{base}/units/Convert.java"}
    assert [r.path for r in same_package_definitions(index, circle, "Shape")] == [f"{base}/geo/Shape.java"]
