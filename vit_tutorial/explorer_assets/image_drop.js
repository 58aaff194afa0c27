// The live explorer's upload control (an anywidget): pick, drop or paste an image. The browser checks its
// size, decodes it (turned upright as its EXIF says), scales it down to at most `side` pixels and sends that
// small PNG to the kernel, so that a large photo never meets Jupyter's message limit (10 MB, 1 MB in Colab).
// `count` goes up with every image, so the same file twice is two uploads.
export default {
  render({ model, el }) {
    const input = document.createElement("input");
    input.type = "file";
    input.accept = "image/*";
    const hint = document.createElement("span");
    hint.className = "vit-drop-hint";
    const limit = () => model.get("limit_mb");
    hint.textContent = `or drop an image here (up to ${limit()} MB)`;
    const problem = document.createElement("span");
    problem.className = "vit-drop-problem";
    problem.style.color = "#b00020";
    el.style.cssText = "display:flex;gap:8px;align-items:center;flex-wrap:wrap;padding:4px;border:1px dashed #aaa;border-radius:4px";
    el.append(input, hint, problem);

    async function send(file) {
      problem.textContent = "";
      if (file.size > limit() * 1e6) {
        problem.textContent = `${file.name} is ${(file.size / 1e6).toFixed(1)} MB; images up to ${limit()} MB are read`;
        model.set("error", problem.textContent);
        model.save_changes();
        return;
      }
      let bitmap;
      try {
        bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
      } catch (error) {
        problem.textContent = `${file.name} is not an image this browser can read; try a PNG or JPEG`;
        model.set("error", problem.textContent);
        model.save_changes();
        return;
      }
      const side = model.get("side"), ratio = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * ratio));
      canvas.height = Math.max(1, Math.round(bitmap.height * ratio));
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
      model.set("png", new DataView(await blob.arrayBuffer()));
      model.set("name", file.name || "pasted image");
      model.set("error", "");
      model.set("count", model.get("count") + 1);
      model.save_changes();
    }

    input.addEventListener("change", () => {
      if (input.files.length) send(input.files[0]);
      input.value = ""; // the same file again is a new change
    });
    el.addEventListener("dragover", (event) => event.preventDefault());
    el.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer.files.length) send(event.dataTransfer.files[0]);
    });
  },
};
