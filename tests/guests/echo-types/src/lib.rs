//! Echoes values of every WIT type kind, so tests can check the JSON
//! conversion and the JSON Schemas both ways through a real component.

wit_bindgen::generate!({
    inline: r#"
        package test:echo-types;

        interface api {
            /// Greets someone.
            greet: func(name: string) -> string;
        }

        world echo-types {
            record point { x: s32, y: s32, label: option<string> }
            variant shape { circle(f64), rect(point), empty }
            enum color { red, green, blue }
            flags perms { read, write, exec }

            export echo-record: func(p: point) -> point;
            export echo-variant: func(s: shape) -> shape;
            export echo-enum: func(c: color) -> color;
            export echo-flags: func(f: perms) -> perms;
            export echo-tuple: func(t: tuple<u8, string, bool>) -> tuple<u8, string, bool>;
            export echo-list: func(l: list<option<s64>>) -> list<option<s64>>;
            export echo-result: func(r: result<u32, string>) -> result<u32, string>;
            export echo-char: func(c: char) -> char;
            export echo-numbers: func(a: s8, b: u16, c: u64, d: f32) -> tuple<s8, u16, u64, f32>;
            export nothing: func();
            export api;
        }
    "#,
});

struct Echo;

impl Guest for Echo {
    fn echo_record(p: Point) -> Point {
        p
    }
    fn echo_variant(s: Shape) -> Shape {
        s
    }
    fn echo_enum(c: Color) -> Color {
        c
    }
    fn echo_flags(f: Perms) -> Perms {
        f
    }
    fn echo_tuple(t: (u8, String, bool)) -> (u8, String, bool) {
        t
    }
    fn echo_list(l: Vec<Option<i64>>) -> Vec<Option<i64>> {
        l
    }
    fn echo_result(r: Result<u32, String>) -> Result<u32, String> {
        r
    }
    fn echo_char(c: char) -> char {
        c
    }
    fn echo_numbers(a: i8, b: u16, c: u64, d: f32) -> (i8, u16, u64, f32) {
        (a, b, c, d)
    }
    fn nothing() {}
}

impl exports::test::echo_types::api::Guest for Echo {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Echo);
