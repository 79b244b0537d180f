"""Take docs/browser.png: a real shipmate release, mid-approval, in the local workspace.

Runs the stack of `shipmate demo --serve` on a free loopback port and acts only through
the page, in headless Debian chromium: Alice types /release sandbox and approves, Carol
approves, and Bob (whose approval is still awaited) opens the reaction picker.

    .venv/bin/python scripts/browser_screenshot.py [OUT.png]

Needs `apt-get install chromium fonts-noto-color-emoji` (emoji are tofu without the font)
and playwright from the dev extras; never `playwright install`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

from bot.local.demo import ALICE, BOB, CAROL, CHANNEL
from bot.local.emulator_cmd import demo_stack

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def approve(page: Page, ts: str, user: str) -> None:
    batch = page.locator(f'.msg[data-ts="{ts}"]')
    await page.select_option("#act-as", user)
    await expect(page.locator("#act-as")).to_have_value(user)
    await batch.locator(".reactions .add-reaction").first.click()
    await page.locator('#picker .pick[data-name="white_check_mark"]').click()
    await expect(batch.locator(".reactions .reaction.mine").first).to_be_visible()


async def main(out: Path) -> None:
    async with demo_stack(0) as demo, async_playwright() as pw:
        emu = demo.emulator
        batch_msg = await emu.wait_for(
            lambda: next((m for m in emu.messages(CHANNEL) if m.user), None), timeout=20
        )
        assert batch_msg is not None
        ts = batch_msg.ts
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = await browser.new_page(viewport={"width": 1180, "height": 860})
        page.set_default_timeout(20_000)
        await page.goto(f"{demo.url}?user={ALICE}")
        batch = page.locator(f'.msg[data-ts="{ts}"]')
        await expect(batch).to_contain_text("Next release to sandbox")
        await page.fill("#composer-input", "/release sandbox")
        await page.press("#composer-input", "Enter")
        await expect(batch).to_contain_text("is waiting for approval")
        await expect(batch.locator(".thread .msg.reply")).to_contain_text("please review")
        await approve(page, ts, ALICE)
        await approve(page, ts, CAROL)
        await page.select_option("#act-as", BOB)
        await expect(page.locator("#acting-name")).to_have_text("bob")
        await expect(batch).to_contain_text("✅ @carol")
        await page.mouse.move(0, 0)
        await batch.locator(".reactions .add-reaction").first.click()
        await expect(page.locator("#picker")).to_be_visible()
        await page.screenshot(path=str(out))
        await browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/browser.png")))
