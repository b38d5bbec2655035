//! What `vidflow plan` prints: for each batch-planner of a checked graph, the plan as text,
//! as one JSON object (`--json`), and optionally as a picture (`--png FILE`). The text and
//! JSON need only the counts; only the picture opens the keyframe images (for thumbnails).

use super::guides::{Fit, load_keyframe};
use super::plan::{Plan, Role, text_report};
use super::spec::{PLANNER_KIND as KIND, plan_from_params};
use image::{Rgb, RgbImage};
use std::path::Path;
use vidflow_engine::plan::Plan as GraphPlan;

/// The plans of every batch-planner in a checked graph, by node id, in graph order.
pub fn graph_plans(graph: &GraphPlan) -> Result<Vec<(String, Plan)>, String> {
    let planners: Vec<_> = graph.nodes.iter().filter(|n| n.kind.name == KIND).collect();
    if planners.is_empty() {
        return Err(format!(
            "graph `{}` has no `{KIND}` node, so there is no plan to show",
            graph.name
        ));
    }
    let mut plans = vec![];
    let mut errors = vec![];
    for node in planners {
        match plan_from_params(&node.params) {
            Ok(plan) => plans.push((node.id.clone(), plan)),
            Err(es) => {
                for e in es {
                    errors.push(format!("node `{}`: {e}", node.id));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors.join("\n"))
    }
}

/// The report `vidflow plan` prints: text, or with `json` one JSON object (for a graph with
/// several planners, an object with one such object per planner id). With `png`, also draws
/// the plan into that file (PNG) and says so at the end of the text.
pub fn plan_report(graph: &GraphPlan, json: bool, png: Option<&Path>) -> Result<String, String> {
    let plans = graph_plans(graph)?;
    let mut out = if json {
        let mut s = match plans.as_slice() {
            [(_, plan)] => serde_json::to_string_pretty(&plan.json_report()),
            many => serde_json::to_string_pretty(&ByNode(many)),
        }
        .map_err(|e| e.to_string())?;
        s.push('\n');
        s
    } else {
        plans
            .iter()
            .map(|(id, plan)| text_report(id, plan))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(path) = png {
        let missing = write_png(&plans, path)?;
        if !json {
            out.push_str(&format!("\nwrote the plan picture to {}\n", path.display()));
            for m in missing {
                out.push_str(&format!("  (no thumbnail: {m})\n"));
            }
        }
    }
    Ok(out)
}

/// Several planners' JSON objects, keyed by node id in graph order.
struct ByNode<'a>(&'a [(String, Plan)]);

impl serde::Serialize for ByNode<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, plan) in self.0 {
            map.serialize_entry(id, &plan.json_report())?;
        }
        map.end()
    }
}

const LEFT: u32 = 44;
const RIGHT: u32 = 16;
const THUMB_H: u32 = 36;
const STRIP_H: u32 = 18;
const GAP: u32 = 10;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([40, 40, 40]);

/// The colour of a frame's cell: anchored keyframe green, continuation blue, transition amber,
/// free light grey, padding pale red.
pub fn role_colour(role: Role) -> Rgb<u8> {
    match role {
        Role::Keyframe(_) => Rgb([30, 150, 70]),
        Role::Continuation => Rgb([50, 100, 200]),
        Role::Transition => Rgb([235, 170, 40]),
        Role::Free => Rgb([215, 215, 215]),
        Role::Padding => Rgb([245, 200, 200]),
    }
}

/// Draws the plans as one picture: per planner a strip of the whole video (each frame's mask
/// as in the call that makes it), then a strip per batch at its place on the timeline, each
/// frame coloured by its mask value and role, with the keyframe thumbnails above their
/// anchors, and a legend. Returns the keyframes that could not be opened (drawn as crossed
/// boxes).
pub fn write_png(plans: &[(String, Plan)], path: &Path) -> Result<Vec<String>, String> {
    let widest = plans
        .iter()
        .flat_map(|(_, p)| p.batches.iter().map(|b| b.call.start + b.call.model_frames))
        .max()
        .unwrap_or(1)
        .max(1);
    let cell = (1200 / widest).clamp(1, 12) as u32;
    let width = (LEFT + widest as u32 * cell + RIGHT).max(LEFT + 480);
    let block = |p: &Plan| -> u32 {
        GAP + STRIP_H + GAP + p.batches.len() as u32 * (THUMB_H + 4 + STRIP_H + GAP) + 8
    };
    let height = plans.iter().map(|(_, p)| block(p)).sum::<u32>() + 24;
    let mut img = RgbImage::from_pixel(width, height, BACKGROUND);
    let mut missing = vec![];
    let mut y = 0;
    for (_, plan) in plans {
        y += GAP;
        // The video: each frame as the call that first makes it.
        let roles = plan.batch_roles();
        let mut owner: Vec<Role> = vec![Role::Free; plan.total_frames as usize];
        for (b, r) in plan.batches.iter().zip(&roles) {
            for i in b.call.continues..b.call.frames {
                owner[(b.call.start + i) as usize] = r[i as usize];
            }
        }
        text(&mut img, 4, y + 6, "T", INK);
        for (t, role) in owner.iter().enumerate() {
            fill(
                &mut img,
                LEFT + t as u32 * cell,
                y,
                cell,
                STRIP_H,
                role_colour(*role),
            );
        }
        text(
            &mut img,
            LEFT + plan.total_frames as u32 * cell + 3,
            y + 6,
            &plan.total_frames.to_string(),
            INK,
        );
        y += STRIP_H + GAP;
        for (b, r) in plan.batches.iter().zip(&roles) {
            let x0 = LEFT + b.call.start as u32 * cell;
            // Thumbnails above the anchors.
            for k in b.call.keyframes.iter().filter(|k| k.local < b.call.frames) {
                let cx = x0 + k.local as u32 * cell + cell / 2;
                let kf = &plan.keyframes[k.index];
                let thumb_w = THUMB_H * 16 / 9;
                let x = cx
                    .saturating_sub(thumb_w / 2)
                    .max(LEFT)
                    .min(width - thumb_w);
                match load_keyframe(&kf.path, thumb_w, THUMB_H, Fit::Cover) {
                    Ok(px) => blit(&mut img, x, y, thumb_w, THUMB_H, &px),
                    Err(e) => {
                        if !missing.contains(&e) {
                            missing.push(e);
                        }
                        cross_box(&mut img, x, y, thumb_w, THUMB_H);
                    }
                }
                fill(&mut img, cx, y + THUMB_H, 1, 4, INK);
            }
            y += THUMB_H + 4;
            text(&mut img, 4, y + 6, &format!("B{}", b.index), INK);
            for (i, role) in r.iter().enumerate() {
                fill(
                    &mut img,
                    x0 + i as u32 * cell,
                    y,
                    cell,
                    STRIP_H,
                    role_colour(*role),
                );
                if cell >= 4 {
                    fill(&mut img, x0 + i as u32 * cell, y, 1, STRIP_H, BACKGROUND);
                }
            }
            y += STRIP_H + GAP;
        }
        y += 8;
    }
    // Legend: colour and mask value.
    let mut x = LEFT;
    let transition_value = plans
        .first()
        .map(|(_, p)| p.spec.transition_value)
        .unwrap_or(0.3);
    for (role, label) in [
        (Role::Keyframe(0), "KEY 0.0".to_string()),
        (Role::Continuation, "CONT 0.0".to_string()),
        (Role::Transition, format!("TRANS {transition_value:.1}")),
        (Role::Free, "FREE 1.0".to_string()),
        (Role::Padding, "PAD 1.0".to_string()),
    ] {
        fill(&mut img, x, y + 4, 12, 12, role_colour(role));
        text(&mut img, x + 16, y + 5, &label, INK);
        x += 16 + label.len() as u32 * 8 + 16;
    }
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    Ok(missing)
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

fn blit(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, px: &[u8]) {
    for yy in 0..h {
        for xx in 0..w {
            let o = ((yy * w + xx) * 3) as usize;
            if x + xx < img.width() && y + yy < img.height() {
                img.put_pixel(x + xx, y + yy, Rgb([px[o], px[o + 1], px[o + 2]]));
            }
        }
    }
}

fn cross_box(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32) {
    fill(img, x, y, w, h, Rgb([235, 235, 235]));
    for i in 0..w {
        let yy = y + i * h / w;
        for (xx, yy) in [(x + i, yy), (x + w - 1 - i, yy)] {
            if xx < img.width() && yy < img.height() {
                img.put_pixel(xx, yy, Rgb([180, 60, 60]));
            }
        }
    }
}

/// Draws digits, `.`, `-` and the capitals the labels use in a 3x5 pixel font.
fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, c: Rgb<u8>) {
    let mut cx = x;
    for ch in s.chars() {
        let rows: [u8; 5] = match ch {
            '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
            '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
            '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
            '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
            '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
            '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
            '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
            '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
            '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
            '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
            '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
            '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
            'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
            'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
            'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
            'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
            'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
            'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
            'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
            'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
            'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
            'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
            'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
            'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
            'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
            'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
            _ => [0; 5],
        };
        for (dy, row) in rows.iter().enumerate() {
            for dx in 0..3 {
                if row & (0b100 >> dx) != 0 {
                    fill(img, cx + dx * 2, y + dy as u32 * 2, 2, 2, c);
                }
            }
        }
        cx += 8;
    }
}
