; Java: definitions and imports for context/ (capture names: see context/languages.py).

(package_declaration (_) @package)

(class_declaration name: (identifier) @name) @definition.class
(record_declaration name: (identifier) @name) @definition.class
(interface_declaration name: (identifier) @name) @definition.interface
(annotation_type_declaration name: (identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(method_declaration name: (identifier) @name) @definition.method
(constructor_declaration name: (identifier) @name) @definition.method

; import com.ex.util.Helper;          -> module "com.ex.util", name "Helper"
; import static com.ex.util.M.square; -> module "com.ex.util.M", name "square"
; import com.ex.model.*;              -> module "com.ex.model", wildcard
(import_declaration (scoped_identifier scope: (_) @import.module name: (identifier) @import.name) .) @import
(import_declaration (scoped_identifier) @import.module (asterisk) @import.wildcard) @import
