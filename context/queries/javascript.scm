; JavaScript: definitions and imports for context/ (capture names: see context/languages.py).

(function_declaration name: (identifier) @name) @definition.function
(generator_function_declaration name: (identifier) @name) @definition.function
(class_declaration name: (identifier) @name) @definition.class
(method_definition name: (property_identifier) @name) @definition.method

; const f = () => ...   /  export const f = function () ...
(program (lexical_declaration (variable_declarator name: (identifier) @name value: [(arrow_function) (function_expression)])) @definition.function)
(program (export_statement declaration: (lexical_declaration (variable_declarator name: (identifier) @name value: [(arrow_function) (function_expression)])) @definition.function))
(program (lexical_declaration (variable_declarator name: (identifier) @name)) @definition.variable)
(program (export_statement declaration: (lexical_declaration (variable_declarator name: (identifier) @name)) @definition.variable))
(program (variable_declaration (variable_declarator name: (identifier) @name)) @definition.variable)

; import def, { a, b as c } from "./m";  import * as ns from "./m"
(import_statement (import_clause (identifier) @import.default) source: (string (string_fragment) @import.module)) @import
(import_statement (import_clause (named_imports (import_specifier name: (_) @import.name alias: (_)? @import.alias))) source: (string (string_fragment) @import.module)) @import
(import_statement (import_clause (namespace_import (identifier) @import.alias)) source: (string (string_fragment) @import.module)) @import
; export { a } from "./m"  (a re-export is an import of the barrel file)
(export_statement (export_clause (export_specifier name: (_) @import.name alias: (_)? @import.alias)) source: (string (string_fragment) @import.module)) @import
(export_statement "*" source: (string (string_fragment) @import.module) @import.wildcard) @import
; const m = require("./m");  const { a } = require("./m")
(lexical_declaration (variable_declarator name: (identifier) @import.alias value: (call_expression function: (identifier) @_require arguments: (arguments (string (string_fragment) @import.module)))) (#eq? @_require "require")) @import
(lexical_declaration (variable_declarator name: (object_pattern (shorthand_property_identifier_pattern) @import.name) value: (call_expression function: (identifier) @_require arguments: (arguments (string (string_fragment) @import.module)))) (#eq? @_require "require")) @import
