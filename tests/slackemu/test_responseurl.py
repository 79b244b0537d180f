"""response_url lifetime and use limits, driven through slack_sdk's webhook client."""

from __future__ import annotations

from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.local.slackemu import SlackEmulator

from .conftest import Receiver


async def test_five_uses_then_used_url(emu: SlackEmulator, receiver: Receiver) -> None:
    res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release")
    hook = AsyncWebhookClient(res.response_url)
    for i in range(5):
        resp = await hook.send(text=f"update {i}")
        assert (resp.status_code, resp.body) == (200, "ok")
    over = await hook.send(text="one too many")
    assert (over.status_code, over.body) == (404, "used_url")
    assert [m.text for m in emu.ephemerals("U0ALICE")] == [f"update {i}" for i in range(5)]


async def test_expired_and_unknown_urls(emu: SlackEmulator, receiver: Receiver) -> None:
    res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release")
    emu.expire_response_urls()
    expired = await AsyncWebhookClient(res.response_url).send(text="late")
    assert (expired.status_code, expired.body) == (404, "expired_url")
    forged = await AsyncWebhookClient(res.response_url[:-3] + "xyz").send(text="x")
    assert forged.status_code == 404


async def test_in_channel_replace_and_delete(emu: SlackEmulator, receiver: Receiver) -> None:
    res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release", "prod")
    hook = AsyncWebhookClient(res.response_url)
    await hook.send(text="starting", response_type="in_channel")
    assert [m.text for m in emu.messages("C0RELEASES")] == ["/release prod", "starting"]
    await hook.send(text="finished", replace_original=True)
    bot_msg = emu.messages("C0RELEASES")[1]
    assert bot_msg.text == "finished" and bot_msg.history == [("starting", [])]
    await hook.send(delete_original=True)
    assert [m.text for m in emu.messages("C0RELEASES")] == ["/release prod"]
    empty = await hook.send(response_type="in_channel")
    assert (empty.status_code, empty.body) == (400, "no_text")
