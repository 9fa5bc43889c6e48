//! The sign-in page: the operator token, once, through a form.

use maud::{DOCTYPE, Markup, html};

pub(crate) fn page(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · carga" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                main {
                    h1 { "carga console" }
                    @if let Some(error) = error { p.error { (error) } }
                    form method="post" action="/console/login" {
                        label { "Operator token " input type="password" name="token" autocomplete="current-password" required; }
                        " "
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}
