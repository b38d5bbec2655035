"""A LiteLLM proxy callback for vidflow's tests (tests/cli/llm_litellm.rs): after the proxy has
parsed a chat-completion request, writes what it understood (model, response_format,
max_tokens, and per message its parts: text lengths, and for each image its data-URL header,
whether its bytes start like a JPEG, and their size) as one JSON line to $VIDFLOW_LITELLM_LOG.
"""
import base64, json, os
from litellm.integrations.custom_logger import CustomLogger

class Recorder(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        out = {"model": data.get("model"), "response_format": data.get("response_format"),
               "max_tokens": data.get("max_tokens"), "messages": []}
        for m in data.get("messages", []):
            c = m.get("content")
            parts = [{"type": "text", "text": c}] if isinstance(c, str) else c
            desc = []
            for p in parts:
                if p.get("type") == "image_url":
                    url = p["image_url"]["url"]
                    head, _, b64 = url.partition(",")
                    raw = base64.b64decode(b64)
                    desc.append({"type": "image_url", "mime": head, "jpeg": raw[:3] == b"\xff\xd8\xff", "bytes": len(raw)})
                else:
                    desc.append({"type": p.get("type"), "chars": len(p.get("text", ""))})
            out["messages"].append({"role": m.get("role"), "parts": desc})
        with open(os.environ["VIDFLOW_LITELLM_LOG"], "a") as f:
            f.write(json.dumps(out) + "\n")
        return data

proxy_handler_instance = Recorder()
