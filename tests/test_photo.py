"""One photo restored (``restore_photo``, ``streamrestore photo.jpg``): the face changes where it is,
and the file comes back as the photo was (upright, grey, transparency, colour profile, EXIF)."""
import io

import cv2
import numpy as np
import pytest
import synthetic_faces as sf
from PIL import Image, PngImagePlugin

from streamrestore.api import restore_photo
from streamrestore.cli import main
from streamrestore.errors import InputError, OutputError
from streamrestore.images import default_photo_output, read_photo, write_photo
from streamrestore.model.identity import IdentityRestorer
from streamrestore.pipeline import FaceRestorer, PipelineConfig
from streamrestore.provenance import restored_comment
from streamrestore.quality import QualityGateConfig
from streamrestore.temporal import TemporalConfig

EXIF_ORIENTATION, EXIF_MAKE, EXIF_SOFTWARE = 0x0112, 0x010F, 0x0131
# a stand-in colour profile: Pillow carries the bytes as they are (a real one: Display P3 on phones);
# its header says RGB (bytes 16-19), as an RGB photo's profile does
PROFILE = bytes(16) + b"RGB " + b"streamrestore-test-profile" * 8
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


class Redden(IdentityRestorer):
    def restore(self, faces, caches, noise_seeds=None):
        out = faces.clone()
        out[:, 0] = (out[:, 0] + 0.3).clamp(0, 1)
        return out


def _face_restorer(detector=None):
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False))
    return FaceRestorer(Redden(128), detector or sf.SyntheticFaceDetector(), config=config)


def _scene(width=240, height=180):
    """A drawn face and its five landmarks (the nose tip is the third)."""
    rgb, (kps,) = sf.scene(width, height, [("ann", sf.face_matrix((width / 2, height / 2), 40))])
    return rgb, kps


def _nose(kps):
    return tuple(np.rint(kps[2]).astype(int))


def test_a_photo_is_restored_where_its_face_is_and_nowhere_else(tmp_path):
    rgb, kps = _scene()
    src = tmp_path / "photo.png"
    Image.fromarray(rgb).save(src)
    stats = restore_photo(src, restorer=_face_restorer())
    out = np.asarray(Image.open(tmp_path / "photo.restored.png"))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    gain = out.astype(int) - rgb.astype(int)
    x, y = _nose(kps)
    assert gain[y, x, 0] > 40  # reddened on the face
    assert np.array_equal(out[:20, :20], rgb[:20, :20]) and np.array_equal(out[-20:, -20:], rgb[-20:, -20:])
    assert stats.faces_restored == stats.frames == 1 and stats.problems == []
    summary = stats.summary()
    assert summary.startswith("1 face restored (") and "frame" not in summary and "track" not in summary
    assert "\n  face 1: no references" in summary


def test_an_empty_photo_is_said_to_be_empty(tmp_path):
    """A 0-byte photo asked "is it a valid image?", where a 0-byte video says it is empty (support F8)."""
    empty = tmp_path / "scan.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"image is empty \(0 bytes\): .*scan.jpg"):
        restore_photo(empty, tmp_path / "out.jpg", _face_restorer())


def test_a_restorer_taking_bgr_frames_restores_the_photo_in_its_colours(tmp_path):
    rgb, kps = _scene()
    src = _saved(tmp_path / "photo.png", rgb)
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False))
    bgr = FaceRestorer(Redden(128), sf.SyntheticFaceDetector(), config=config, channel_order="bgr")
    restore_photo(src, tmp_path / "out.png", bgr)
    out = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    x, y = _nose(kps)
    assert out[y, x, 0] - rgb[y, x, 0] > 40 and abs(out[y, x, 2] - int(rgb[y, x, 2])) < 10  # red, not blue


def test_a_photo_in_which_nothing_changes_is_copied_byte_for_byte(tmp_path):
    """No face, or only clean faces: the file's own bytes (a JPEG compressed again would lose detail)."""
    src = tmp_path / "wall.jpg"
    Image.fromarray(sf.background(120, 90)).save(src, quality=80)
    stats = restore_photo(src, tmp_path / "out.jpg", _face_restorer())
    assert (tmp_path / "out.jpg").read_bytes() == src.read_bytes()
    assert "no faces were found: the photo is written unchanged" in stats.summary()
    restore_photo(src, tmp_path / "out.png", _face_restorer())  # another format: written as that
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(src)))

    face = _saved(tmp_path / "face.jpg", _scene()[0])
    config = PipelineConfig(temporal=TemporalConfig.off())  # the quality gate on: the drawn face is clean
    stats = restore_photo(face, tmp_path / "face_out.jpg", FaceRestorer(Redden(128), sf.SyntheticFaceDetector(),
                                                                         config=config))
    assert stats.faces_left_clean == 1
    assert (tmp_path / "face_out.jpg").read_bytes() == face.read_bytes()


def test_a_phone_photo_comes_back_upright_with_its_profile_and_exif(tmp_path):
    """A phone stores a portrait photo sideways with an EXIF orientation: the face is found upright,
    the output is stored upright (orientation 1) and keeps the colour profile and the other tags."""
    shown, kps = _scene(180, 240)
    stored = np.ascontiguousarray(np.rot90(shown, 1))  # orientation 6: shown after a quarter turn clockwise
    exif = Image.Exif()
    exif[EXIF_ORIENTATION], exif[EXIF_MAKE] = 6, "TestCam"
    src = tmp_path / "IMG_0001.JPG"
    Image.fromarray(stored).save(src, quality=97, exif=exif.tobytes(), icc_profile=PROFILE, xmp=XMP, dpi=(300, 300))
    assert not sf.UprightFaceDetector().detect(stored)

    stats = restore_photo(src, restorer=_face_restorer(sf.UprightFaceDetector()))
    assert stats.faces_restored == 1
    with Image.open(tmp_path / "IMG_0001.restored.JPG") as out:
        assert out.format == "JPEG" and out.size == (180, 240)  # stored as shown
        assert out.info["icc_profile"] == PROFILE and out.info["xmp"] == XMP and out.info["dpi"] == (300, 300)
        assert out.getexif()[EXIF_ORIENTATION] == 1 and out.getexif()[EXIF_MAKE] == "TestCam"
        picture = np.asarray(out.convert("RGB")).astype(int)
    x, y = _nose(kps)
    assert picture[y, x, 0] - int(shown[y, x, 0]) > 30  # reddened where the face is shown (JPEG: roughly)


def test_strip_metadata_leaves_out_a_photos_gps_camera_and_owner(tmp_path):
    """A photo of someone who must not be found kept its EXIF GPS block, camera and owner, its XMP and a
    PNG's text: ``strip_metadata`` leaves them out (the colour profile stays), also where no face changed,
    which was a byte copy."""
    from streamrestore.cli import main

    shown, _ = _scene(180, 240)
    exif = Image.Exif()
    exif[EXIF_MAKE] = "TestCam"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPSInfo
    src = tmp_path / "source.jpg"
    Image.fromarray(shown).save(src, quality=97, exif=exif.tobytes(), icc_profile=PROFILE, xmp=XMP)
    with Image.open(src) as photo:
        assert photo.getexif().get_ifd(0x8825)
    nobody = sf.SyntheticFaceDetector(min_eye_distance=1e4)  # (finds no face: nothing changes)
    for faces, name in ((_face_restorer(sf.UprightFaceDetector()), "restored.jpg"), (_face_restorer(nobody), "same.jpg")):
        stats = restore_photo(src, tmp_path / name, faces, strip_metadata=True)
        assert stats.faces_restored == (name == "restored.jpg")
        with Image.open(tmp_path / name) as out:  # (a changed face's mark alone: streamrestore.provenance)
            assert dict(out.getexif()) == ({EXIF_SOFTWARE: restored_comment()} if stats.faces_restored else {}), name
            assert "xmp" not in out.info and out.info["icc_profile"] == PROFILE, name
    png = tmp_path / "source.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "Rue X 12")
    Image.fromarray(shown).save(png, pnginfo=info, exif=exif.tobytes())
    assert main([str(png), "-o", str(tmp_path / "out.png"), "--model", "identity", "--detector", "dlib",
                 "--strip-metadata"]) == 0
    with Image.open(tmp_path / "out.png") as out:
        assert not out.getexif() and "Location" not in out.info
    assert main([str(png), "-o", str(tmp_path / "kept.png"), "--model", "identity", "--detector", "dlib"]) == 0
    with Image.open(tmp_path / "kept.png") as out:
        assert out.info["Location"] == "Rue X 12" and out.getexif()[EXIF_MAKE] == "TestCam"


def test_transparency_and_grey_are_kept(tmp_path):
    rgb, kps = _scene()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :30] = 0  # a cut-out edge
    src = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([rgb, alpha])).save(src)
    restore_photo(src, tmp_path / "out.webp", _face_restorer())
    with Image.open(tmp_path / "out.webp") as out:
        assert out.mode == "RGBA"
        assert np.array_equal(np.asarray(out.getchannel("A")), alpha)

    grey = tmp_path / "grey.png"
    Image.fromarray(rgb).convert("L").save(grey)
    stats = restore_photo(grey, tmp_path / "grey_out.png", _face_restorer(sf.UprightFaceDetector()))
    with Image.open(tmp_path / "grey_out.png") as out:
        assert out.mode == "L" and out.size == (240, 180)
    assert stats.problems == []


def test_what_the_output_cannot_keep_is_said(tmp_path):
    rgb, _ = _scene()
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), rgb[:, :, ::-1].astype(np.uint16) * 257)
    photo = read_photo(deep)
    assert photo.bits == 16 and np.array_equal(photo.rgb, rgb)
    assert write_photo(tmp_path / "deep_out.jpg", photo.rgb, photo) == [
        "the photo had 16 bits per sample; it is written with 8 (write .png or .tif to keep 16)"]
    assert write_photo(tmp_path / "deep_out.png", photo.rgb, photo) == []

    cutout = read_photo(_saved(tmp_path / "cutout.png", np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])))
    assert cutout.alpha is not None
    (note,) = write_photo(tmp_path / "flat.jpg", cutout.rgb, cutout)
    assert note == "the photo's transparency is not kept: .jpg holds none (write .png to keep it)"


def _saved(path, array):
    Image.fromarray(array).save(path)
    return path


def test_bad_outputs_are_refused_before_the_restorer_is_built(tmp_path):
    rgb, _ = _scene()
    src = _saved(tmp_path / "photo.png", rgb)

    def never(fps):
        raise AssertionError("built")

    (tmp_path / "taken.png").write_bytes(b"precious")
    cases = {
        tmp_path / "photo.mp4": r"cannot write a photo as \.mp4 \(photo\.mp4\); use one of \.jpg, .*\.png",
        tmp_path / "taken.png": "already exists; replace it with --force",
        tmp_path / "missing" / "out.png": "output folder .*missing does not exist",
        tmp_path: "is a folder; give a file name such as .*/out.png",
        src: "is the input file",
    }
    for dst, message in cases.items():
        with pytest.raises(OutputError, match=message):
            restore_photo(src, dst, never, force=dst == src)
    assert (tmp_path / "taken.png").read_bytes() == b"precious"
    with pytest.raises(InputError, match="broken.jpg"):
        restore_photo(_bytes(tmp_path / "broken.jpg", b"not a photo"), tmp_path / "o.png", never)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg", "photo.png", "taken.png"]  # no temp left


def test_a_photo_of_more_pixels_than_pillow_reads_is_an_input_error(tmp_path, monkeypatch):
    """A 20000 x 20000 PNG (1.2 MB) raised Pillow's DecompressionBombError, not a UserError: a service
    that answers a UserError with "bad request" answered a server error. (Pillow's limit lowered so
    that a small file stands for it.)"""
    from PIL import Image

    rgb, _ = _scene()
    src = _saved(tmp_path / "photo.png", rgb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", rgb.shape[0] * rgb.shape[1] // 4)

    def never(fps):
        raise AssertionError("built")

    with pytest.raises(InputError, match=r"photo\.png holds more than 0 million pixels, .*scale it down first"):
        restore_photo(src, tmp_path / "o.png", never)


def _bytes(path, data):
    path.write_bytes(data)
    return path


def test_default_output_keeps_the_format_where_one_is_written(tmp_path):
    assert default_photo_output(tmp_path / "a.jpeg") == tmp_path / "a.restored.jpeg"
    assert default_photo_output(tmp_path / "b.PNG") == tmp_path / "b.restored.PNG"
    assert default_photo_output(tmp_path / "c.jfif") == tmp_path / "c.restored.jfif"


def test_the_command_restores_a_photo(synthetic_faces, synthetic_refs, tmp_path, capsys):
    rgb, _ = _scene()
    src = _saved(tmp_path / "photo.jpg", rgb)
    code = main([str(src), "--refs", str(synthetic_refs), "--model", "identity", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.startswith("1 face (") and "\n  face 1: refs" in err  # (the identity model: left as it was)
    assert err.rstrip().endswith(f"wrote {tmp_path / 'photo.restored.jpg'}")
    with Image.open(tmp_path / "photo.restored.jpg") as out:
        assert out.format == "JPEG" and out.size == (240, 180)


def test_no_quality_gate_restores_the_faces_the_gate_finds_clean(synthetic_faces, tmp_path, capsys):
    """A GFPGAN user's old photos: every face was "clean, left as it was" and nothing could ask for them
    to be restored anyway."""
    import json

    rgb, _ = _scene()
    src = _saved(tmp_path / "photo.png", rgb)
    counts = {}
    for name, extra in (("default", []), ("forced", ["--no-quality-gate"])):
        out = tmp_path / f"{name}.json"
        code = main([str(src), "-o", str(tmp_path / f"{name}.png"), "--model", "identity", "--json", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 0, err
        record = json.loads(out.read_text())
        counts[name] = (record["faces_restored"], record["faces_left_clean"])
        if name == "default":
            assert "--no-quality-gate restores them anyway" in err
    assert counts == {"default": (0, 1), "forced": (1, 0)}


@pytest.mark.parametrize("options, named", [
    (["--start", "1"], "--start applies to videos only"),
    (["--crf", "20", "--codec", "libx265"], "--crf, --codec apply to videos only"),
    (["--pix-fmt", "yuv420p"], "--pix-fmt applies to videos only"),
    (["--no-deinterlace"], "--no-deinterlace applies to videos only"),
    (["--field-rate"], "--field-rate applies to videos only"),
])
def test_video_options_given_for_a_photo_are_named(synthetic_faces, tmp_path, capsys, options, named):
    src = _saved(tmp_path / "photo.png", _scene()[0])
    assert main([str(src), *options, "--model", "identity"]) == 2
    err = capsys.readouterr().err
    assert f"streamrestore: error: {named}; {src} is a photo" in err
    assert not (tmp_path / "photo.restored.png").exists()


def test_a_raw_photo_gets_export_advice(tmp_path, capsys):
    src = _bytes(tmp_path / "IMG_0002.CR3", b"\x00\x00\x00\x18ftypcrx ")
    assert main([str(src)]) == 2
    assert "camera raw photos are not read; export them as JPEG or TIFF" in capsys.readouterr().err


def test_an_iphones_heic_photo_comes_back_as_heic_upright_with_its_profile_and_exif(tmp_path):
    """An iPhone stores a portrait sideways with a turn libheif applies: the face is found upright, the
    output is a HEIC stored upright that keeps the colour profile, EXIF and XMP."""
    from streamrestore.images import _pillow

    shown, kps = _scene(180, 240)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION], exif[EXIF_MAKE] = 6, "Apple"
    src = tmp_path / "IMG_0001.HEIC"
    _pillow()
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1))).save(src, format="HEIF", quality=95,
                                                                   exif=exif.tobytes(), icc_profile=PROFILE, xmp=XMP)
    stats = restore_photo(src, restorer=_face_restorer(sf.UprightFaceDetector()))
    assert stats.faces_restored == 1 and stats.problems == []
    with Image.open(tmp_path / "IMG_0001.restored.HEIC") as out:
        assert out.format == "HEIF" and out.size == (180, 240)
        assert out.info["icc_profile"] == PROFILE and out.info["xmp"] == XMP
        assert out.getexif()[EXIF_ORIENTATION] == 1 and out.getexif()[EXIF_MAKE] == "Apple"
        picture = np.asarray(out.convert("RGB")).astype(int)
    x, y = _nose(kps)
    assert picture[y, x, 0] - int(shown[y, x, 0]) > 30  # reddened where the face is shown
    assert np.abs(picture[:20, :20] - shown[:20, :20]).mean() < 4  # the rest as it was (lossy: roughly)


def test_a_10_bit_heic_keeps_its_10_bits(tmp_path):
    """A 10-bit HEIC photo (as some phones take them) was written back with 8 bits."""
    import pillow_heif

    rgb, kps = _scene()
    deep = rgb.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 200, rgb.shape).astype(np.uint16)
    src = tmp_path / "IMG_0003.HEIC"
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(rgb.shape[1], rgb.shape[0]), data=deep.tobytes())
    heif.info["icc_profile"] = PROFILE
    heif.save(src, quality=-1)
    photo = read_photo(src)
    assert photo.bits == 10 and photo.deep is not None and photo.deep.shape == rgb.shape
    stats = restore_photo(src, restorer=_face_restorer())
    assert stats.faces_restored == 1 and stats.problems == []
    out = pillow_heif.open_heif(tmp_path / "IMG_0003.restored.HEIC", convert_hdr_to_8bit=False)
    assert out.info["bit_depth"] == 10 and out.info["icc_profile"] == PROFILE
    samples = np.asarray(out).astype(int)
    x, y = _nose(kps)
    assert samples[y, x, 0] - int(deep[y, x, 0]) > 30 * 257  # reddened where the face is
    corner = np.abs(samples[:20, :20] - deep[:20, :20].astype(int)).mean()
    assert corner < 257  # the rest as it was, below an 8-bit level on average (lossless: the 10-bit steps)
    assert write_photo(tmp_path / "out.jpg", photo.rgb, photo) == [
        "the photo had 10 bits per sample; it is written with 8 (write .png or .tif to keep 10)"]


def test_what_a_heic_holds_beside_its_picture_is_said_lost(tmp_path):
    """A Portrait photo's depth map and an HDR photo's gain map are not written again: said, not
    lost silently (pillow-heif writes neither from a picture; its ``info`` as it reads them)."""
    from streamrestore.images import PhotoFile, _heif_parts

    info = {"depth_images": [object()], "aux": {"urn:com:apple:photo:2020:aux:hdrgainmap": [2]}}
    photo = PhotoFile(rgb=np.zeros((8, 8, 3), np.uint8), bits=10, parts_not_kept=_heif_parts(info))
    assert _heif_parts({"depth_images": [], "aux": {}}) == []
    notes = write_photo(tmp_path / "out.heic", photo.rgb, photo)
    assert notes == ["the photo had 10 bits per sample; it is written with 8",
                     "the photo's depth map (Portrait mode's background blur is no longer editable) is not kept",
                     "the photo's HDR gain map (the photo shows as SDR) is not kept"]


def test_read_photo_matches_read_rgb(tmp_path):
    """The pixels are the one loader's: a photo restored and the same photo as a reference agree."""
    from streamrestore.images import read_rgb

    buffer = io.BytesIO()
    Image.fromarray(_scene()[0]).save(buffer, format="JPEG", quality=90)
    src = _bytes(tmp_path / "p.jpg", buffer.getvalue())
    assert np.array_equal(read_photo(src).rgb, read_rgb(src))


@pytest.mark.parametrize("suffix", [".webp", ".png", ".tif"])
def test_a_file_of_several_pictures_is_refused_not_cut_to_its_first(tmp_path, suffix):
    """An animated WebP or PNG, a multi-page TIFF: restoring the first picture alone would lose the rest."""
    pictures = [Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)) for i in range(3)]
    src = tmp_path / f"anim{suffix}"
    pictures[0].save(src, save_all=True, append_images=pictures[1:])

    def never(fps):
        raise AssertionError("built")

    said = (r"holds 3 pages; a photo's restore would keep the first only: save each page as a photo first"
            if suffix == ".tif" else  # (a scanner's front and back of a print: no film to make)
            r"holds 3 pictures \(animated, or pages\); a photo's restore would keep the first only: make it a video first")
    with pytest.raises(InputError, match=rf"anim\{suffix} {said}"):
        restore_photo(src, tmp_path / "out.png", never)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_a_group_photo_restored_toward_one_persons_photos_names_the_other_face(tmp_path):
    """One reference set serves every face (``unmatched="restore"``); in a photo, whose one face is all
    there is to judge, the face that does not match those photos is named, as a video's long track is."""
    from streamrestore.faces.references import load_reference_sets

    detector, embedder = sf.SyntheticFaceDetector(), sf.SyntheticFaceEmbedder()
    sets = load_reference_sets([str(sf.write_portraits(tmp_path / "ann", "ann"))], detector, embedder, 128)
    rgb, _ = sf.two_people()
    src = _saved(tmp_path / "group.png", rgb)
    config = PipelineConfig(temporal=TemporalConfig.off(), gate=QualityGateConfig(enabled=False))
    stats = restore_photo(src, tmp_path / "out.png", FaceRestorer(Redden(128), detector, sets, embedder=embedder,
                                                                  config=config))
    assert stats.faces_restored == 2
    (stranger,) = stats.unlike_their_references()
    text = stats.summary()
    assert (f"warning: 1 face restored toward ann's photos scored below the {stats.match_threshold:.2f} of the same "
            f"person against them (face {stranger}: ") in text, text


def test_a_photos_face_that_its_references_fit_poorly_is_named():
    """A video's track is judged once it has 10 faces (a few frames may turn away); a photo's one face
    is all there is."""
    from streamrestore.run import RunStats

    for photo in (True, False):
        stats = RunStats(photo=photo)
        stats.add_face(1, 0, "ann", restored=True)
        stats.add_reference_match(1, 0.05)
        said = "warning: face 1 (ann): its reference photos' detail fits the face poorly (0.05 of 1"
        assert (said in stats.summary()) == photo
        assert ("photos in the photo's light and pose help most" in stats.summary()) == photo


def test_a_pngs_text_and_xmp_are_kept(tmp_path):
    from PIL import PngImagePlugin

    rgb, _ = _scene()
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("Title", "Grandma, 1962")
    chunks.add_itxt("XML:com.adobe.xmp", XMP.decode())
    src = tmp_path / "scan.png"
    Image.fromarray(rgb).save(src, pnginfo=chunks)
    restore_photo(src, tmp_path / "out.png", _face_restorer())
    with Image.open(tmp_path / "out.png") as out:
        assert out.text == {"Title": "Grandma, 1962", "XML:com.adobe.xmp": XMP.decode()}
    jpeg = tmp_path / "phone.jpg"
    Image.fromarray(rgb).save(jpeg, quality=95, xmp=XMP)
    restore_photo(jpeg, tmp_path / "phone.png", _face_restorer())
    with Image.open(tmp_path / "phone.png") as out:
        assert out.info["xmp"] == XMP


def test_a_cmyk_scans_profile_is_not_put_on_rgb_pixels(tmp_path):
    """A print scan in CMYK carries a CMYK colour profile, which cannot describe the restored RGB
    pixels: it is left out (a viewer would misread the colours) and the run says so."""
    rgb, kps = _scene()
    cmyk_profile = bytes(16) + b"CMYK" + bytes(108)  # an ICC header naming its colour space
    src = tmp_path / "print.jpg"
    Image.fromarray(rgb).convert("CMYK").save(src, quality=95, icc_profile=cmyk_profile)
    stats = restore_photo(src, tmp_path / "out.jpg", _face_restorer())
    assert stats.faces_restored == 1
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.mode == "RGB" and "icc_profile" not in out.info
    assert stats.problems == ["the photo's CMYK colour profile is not kept: it is written as RGB"]
    # with no profile (as Pillow writes one): the colours were made RGB without a word (family F5)
    Image.fromarray(rgb).convert("CMYK").save(src, quality=95)
    stats = restore_photo(src, tmp_path / "bare.jpg", _face_restorer())
    with Image.open(tmp_path / "bare.jpg") as out:
        assert out.mode == "RGB"
    assert stats.problems == ["the photo's colours are CMYK (a print's inks), with no colour profile to read them "
                              "by: it is written as RGB"]


@pytest.mark.parametrize("name", ["scan.tif", "scan.png"])
def test_a_16_bit_scan_keeps_its_16_bits(tmp_path, name):
    """A scanner's 48-bit TIFF (or a 16-bit PNG) comes back with 16 bits per sample: every sample away
    from the face exactly as it was (the low bits too), the face restored (the change, 257 per 8-bit
    step, added to the 16-bit samples), a TIFF's colour profile and dpi kept."""
    import tifffile

    rgb, kps = _scene()
    rng = np.random.default_rng(0)
    deep = rgb.astype(np.uint16) * 257 + rng.integers(0, 200, rgb.shape).astype(np.uint16)  # low bits in use
    src = tmp_path / name
    if name.endswith(".tif"):
        tifffile.imwrite(src, deep, photometric="rgb", iccprofile=PROFILE, resolution=(600.0, 600.0),
                         resolutionunit="INCH")
    else:
        src.write_bytes(cv2.imencode(".png", deep[:, :, ::-1])[1].tobytes())
    stats = restore_photo(src, tmp_path / f"out{src.suffix}", _face_restorer())
    assert stats.faces_restored == 1 and stats.problems == []
    out = _read_16_bits(tmp_path / f"out{src.suffix}")[:, :, ::-1]
    assert out.shape == deep.shape
    assert np.array_equal(out[:20, :20], deep[:20, :20]) and np.array_equal(out[-20:, -20:], deep[-20:, -20:])
    x, y = _nose(kps)
    assert int(out[y, x, 0]) - int(deep[y, x, 0]) > 40 * 257
    if name.endswith(".tif"):
        with Image.open(tmp_path / "out.tif") as written:
            assert written.info.get("icc_profile") == PROFILE and tuple(written.info["dpi"]) == (600, 600)
        photo = read_photo(src)
        photo.xmp = XMP
        assert write_photo(tmp_path / "xmp.tif", photo.rgb, photo) == []
        with tifffile.TiffFile(tmp_path / "xmp.tif") as written:
            assert bytes(written.pages[0].tags[700].value) == XMP  # kept in TIFF's XMP tag
        exif = Image.Exif()
        exif[EXIF_MAKE] = "Scanner Co"
        photo.exif = exif.tobytes()
        assert write_photo(tmp_path / "again.tif", photo.rgb, photo) == [
            "the photo's EXIF is not kept: its 16-bit TIFF is written without it (.png keeps both)"]


def test_a_16_bit_tiff_without_tifffile_names_what_keeps_its_bits(tmp_path, monkeypatch):
    """Without tifffile a 16-bit TIFF was written with 8 bits, and the note said "write .png or .tif to keep 16"
    of a .tif."""
    from streamrestore import images

    rgb, _ = _scene()
    src = tmp_path / "scan.png"
    src.write_bytes(cv2.imencode(".png", rgb.astype(np.uint16)[:, :, ::-1] * 257)[1].tobytes())
    monkeypatch.setattr(images, "_writes_16_bit_tiff", lambda: False)
    photo = read_photo(src)
    assert write_photo(tmp_path / "out.tif", photo.rgb, photo) == [
        "the photo had 16 bits per sample; it is written with 8 (write .png to keep 16, or pip install tifffile)"]


def _read_16_bits(path):
    picture = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    assert picture.dtype == np.uint16
    return picture


def test_a_16_bit_grey_photo_is_written_grey_with_16_bits(tmp_path):
    """The change of the grey picture is added to the 16-bit grey samples."""
    rgb, _ = _scene()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257 + 100
    src = tmp_path / "grey.png"
    src.write_bytes(cv2.imencode(".png", grey)[1].tobytes())
    photo = read_photo(src)
    assert photo.grey and photo.bits == 16 and np.array_equal(photo.deep, grey)
    brighter = photo.rgb.copy()
    brighter[50:60, 50:60] = np.minimum(brighter[50:60, 50:60].astype(int) + 20, 255)
    assert write_photo(tmp_path / "out.png", brighter, photo) == []
    out = _read_16_bits(tmp_path / "out.png")
    assert out.shape == grey.shape
    changed = np.zeros(grey.shape, bool)
    changed[50:60, 50:60] = True
    assert np.array_equal(out[~changed], grey[~changed])
    step = (out[changed].astype(int) - grey[changed]) / 257
    assert np.all((step > 19) & (step < 21)) or np.all(out[changed] == 65535)


def test_a_16_bit_pngs_profile_exif_and_text_are_kept(tmp_path):
    """The 16-bit PNG OpenCV writes is given the metadata chunks Pillow writes for the photo's."""
    rgb, _ = _scene()
    photo = read_photo(_saved(tmp_path / "plain.png", rgb))
    photo.bits, photo.deep = 16, rgb.astype(np.uint16) * 257
    exif = Image.Exif()
    exif[EXIF_MAKE] = "Scanner Co"
    photo.icc_profile, photo.exif, photo.dpi, photo.text = PROFILE, exif.tobytes(), (300, 300), {"Title": "Grandma"}
    photo.xmp = XMP
    assert write_photo(tmp_path / "out.png", rgb, photo) == []
    with Image.open(tmp_path / "out.png") as out:
        assert out.info.get("icc_profile") == PROFILE and round(out.info["dpi"][0]) == 300
        assert out.getexif()[EXIF_MAKE] == "Scanner Co" and out.text["Title"] == "Grandma"
        assert out.info.get("xmp") is not None or XMP.decode() in out.text.get("XML:com.adobe.xmp", "")
    again = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    assert again.dtype == np.uint16 and np.array_equal(again[:, :, ::-1], photo.deep)


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGB"])
def test_a_tiffs_structure_is_not_given_back_as_its_exif(tmp_path, mode):
    """Pillow reads a TIFF's whole first directory as its EXIF: given back, a CMYK or palette TIFF's colour model
    was written over the restored RGB samples, and the output opened nowhere (the run said it was written). Its
    owner's tags are kept; a TIFF without a resolution came back at 1 dpi; its compression is kept."""
    rgb, _ = _scene()
    src = tmp_path / f"scan_{mode}.tif"
    exif = Image.Exif()
    exif[0x013B], exif[0x8298] = "Jane Photographer", "(c) 2026 Jane"  # Artist, Copyright
    picture = Image.fromarray(rgb).convert(mode) if mode != "P" else Image.fromarray(rgb).quantize(64)
    picture.save(src, exif=exif.tobytes(), compression="tiff_lzw")
    assert "dpi" not in Image.open(src).info or 282 not in Image.open(src).tag_v2
    stats = restore_photo(src, tmp_path / "out.tif", _face_restorer())
    assert stats.faces_restored == 1
    with Image.open(tmp_path / "out.tif") as out:
        out.load()
        assert out.mode == "RGB" and out.info["compression"] == "tiff_lzw"
        tags = out.getexif()
        assert (tags[0x013B], tags[0x8298], tags[EXIF_SOFTWARE]) == ("Jane Photographer", "(c) 2026 Jane",
                                                                     restored_comment())
        assert 282 not in out.tag_v2 and 296 not in out.tag_v2  # (no resolution given: none made up)
    dpi = tmp_path / "dpi.tif"
    Image.fromarray(rgb).save(dpi, dpi=(300, 300))
    restore_photo(dpi, tmp_path / "dpi_out.tif", _face_restorer())
    with Image.open(tmp_path / "dpi_out.tif") as out:
        assert out.info["dpi"] == (300, 300)


def test_a_photo_written_that_does_not_open_again_is_an_output_error(tmp_path):
    """The guard behind the TIFF above: a file a format's writer made unreadable is not said written."""
    rgb, _ = _scene()
    src = tmp_path / "a.png"
    Image.fromarray(rgb).save(src)
    photo = read_photo(src)
    broken = Image.Exif()
    broken[262] = 5  # PhotometricInterpretation: separated (CMYK), over RGB samples
    photo.exif = broken.tobytes()
    with pytest.raises(OutputError, match=r"does not open again .*; write \.png instead"):
        write_photo(tmp_path / "out.tif", rgb, photo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # (nothing left behind)


def test_a_tiffs_feathered_edges_keep_their_colour(tmp_path):
    """OpenCV's TIFF reader multiplies the colour by the alpha: a cut-out's feathered edge came back darkened
    (98 at alpha 65 as 25), the colour under transparent pixels black, far from any face."""
    rgb, _ = _scene()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :36] = np.linspace(0, 255, 36).astype(np.uint8)  # (left of the face's change: columns 39-199)
    src = tmp_path / "cutout.tif"
    Image.fromarray(np.dstack([rgb, alpha])).save(src)
    photo = read_photo(src)
    assert np.array_equal(photo.rgb, rgb) and np.array_equal(photo.alpha, alpha)
    restore_photo(src, tmp_path / "out.tif", _face_restorer())
    out = np.asarray(Image.open(tmp_path / "out.tif"))
    assert np.array_equal(out[:, :36], np.dstack([rgb, alpha])[:, :36])


def test_a_jpegs_iptc_comment_and_subsampling_are_kept(tmp_path):
    """A photographer's JPEG lost its IPTC block (credit, copyright: where agencies read them) and its comment
    without a word, and a 4:4:4 master came back 4:2:0; ``strip_metadata`` leaves the first two out."""
    from PIL import IptcImagePlugin, JpegImagePlugin

    rgb, _ = _scene()
    iptc = b"8BIM\x04\x04\x00\x00\x00\x00\x00\x13\x1c\x02\x74\x00\x0d(c) 2026 Jane\x00"
    thumbnail = b"8BIM\x04\x0c\x00\x00\x00\x00\x00\x04FACE"  # (Photoshop's thumbnail: the face as it was)
    block = b"Photoshop 3.0\x00" + thumbnail + iptc
    src = tmp_path / "master.jpg"
    Image.fromarray(rgb).save(src, quality=95, subsampling=0, comment=b"Shot for client X")
    data = src.read_bytes()  # (Pillow writes no APP13: put one after the JFIF segment)
    at = 4 + int.from_bytes(data[4:6], "big")
    src.write_bytes(data[:at] + b"\xff\xed" + (len(block) + 2).to_bytes(2, "big") + block + data[at:])
    with Image.open(src) as original:
        credit = IptcImagePlugin.getiptcinfo(original)
    assert credit == {(2, 116): b"(c) 2026 Jane"}
    for strip, name in ((False, "kept.jpg"), (True, "stripped.jpg")):
        stats = restore_photo(src, tmp_path / name, _face_restorer(), strip_metadata=strip)
        assert stats.faces_restored == 1
        with Image.open(tmp_path / name) as out:
            assert JpegImagePlugin.get_sampling(out) == 0
            assert IptcImagePlugin.getiptcinfo(out) == (None if strip else credit)
            assert b"FACE" not in (tmp_path / name).read_bytes()  # (only the IPTC of Photoshop's resources)
            assert out.info.get("comment") == (None if strip else b"Shot for client X")
            assert out.getexif()[EXIF_SOFTWARE] == restored_comment()


def test_a_lossless_webp_is_written_lossless(tmp_path):
    """A lossless WebP came back lossy (and the colour under its transparent pixels lost)."""
    rgb, _ = _scene()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :20] = 0
    src = tmp_path / "art.webp"
    Image.fromarray(np.dstack([rgb, alpha])).save(src, lossless=True, exact=True)
    photo = read_photo(src)
    assert photo.lossless
    restore_photo(src, tmp_path / "out.webp", _face_restorer())
    out = np.asarray(Image.open(tmp_path / "out.webp"))
    assert np.array_equal(out[:, :36], np.dstack([rgb, alpha])[:, :36])  # (left of the face: every sample as it was)
    assert b"VP8L" in (tmp_path / "out.webp").read_bytes()[:200]
    lossy = tmp_path / "lossy.webp"
    Image.fromarray(rgb).save(lossy, quality=80)
    assert not read_photo(lossy).lossless


def _packbits_tiff_with_exif_ifd(path, rgb) -> None:
    """A PackBits TIFF with an Exif block (DateTimeOriginal), as cameras and Lightroom write: Pillow writes no
    compressed TIFF with one, so an uncompressed one is written and its strip packed by hand."""
    import struct

    exif = Image.Exif()
    exif[EXIF_MAKE] = "Canon"
    exif.get_ifd(0x8769)[0x9003] = "2024:01:02 03:04:05"
    Image.fromarray(rgb).save(path, exif=exif.tobytes())
    data = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = {struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0]: ifd + 2 + 12 * i
               for i in range(struct.unpack_from("<H", data, ifd)[0])}
    assert struct.unpack_from("<I", data, entries[273] + 4)[0] == 1  # (one strip)
    start, count = (struct.unpack_from("<I", data, entries[tag] + 8)[0] for tag in (273, 279))
    raw = bytes(data[start:start + count])
    packed = b"".join(bytes([len(raw[i:i + 128]) - 1]) + raw[i:i + 128] for i in range(0, len(raw), 128))
    struct.pack_into("<I", data, entries[273] + 8, len(data))
    struct.pack_into("<I", data, entries[279] + 8, len(packed))
    struct.pack_into("<H", data, entries[259] + 8, 32773)  # Compression: PackBits
    path.write_bytes(bytes(data) + packed)


def test_a_compressed_tiff_with_an_exif_block_is_written_keeping_the_exif(tmp_path):
    """Keeping a TIFF's compression made Pillow write it through libtiff, which refuses an Exif block's pointer: a
    camera's compressed TIFF failed with a RuntimeError. Its EXIF is kept, uncompressed, and said; a
    JPEG-compressed TIFF is written at quality 95 (libtiff's own default is 75)."""
    rgb, _ = _scene()
    src = tmp_path / "cam.tif"
    _packbits_tiff_with_exif_ifd(src, rgb)
    with Image.open(src) as image:
        assert image.info["compression"] == "packbits" and image.getexif().get_ifd(0x8769)
    stats = restore_photo(src, tmp_path / "out.tif", _face_restorer())
    assert stats.faces_restored == 1
    assert any("packbits compression is not kept" in p for p in stats.problems), stats.problems
    with Image.open(tmp_path / "out.tif") as out:
        assert out.getexif().get_ifd(0x8769)[0x9003] == "2024:01:02 03:04:05"
        assert out.getexif()[EXIF_MAKE] == "Canon"
    jpeg_tiff = tmp_path / "scan.tif"
    Image.fromarray(rgb).save(jpeg_tiff, compression="jpeg", quality=95)
    restore_photo(jpeg_tiff, tmp_path / "scan_out.tif", _face_restorer())
    with Image.open(tmp_path / "scan_out.tif") as out:
        assert out.info["compression"] == "jpeg"
    at_75 = tmp_path / "at_75.tif"
    Image.open(tmp_path / "scan_out.tif").save(at_75, compression="jpeg", quality=75)
    assert (tmp_path / "scan_out.tif").stat().st_size > 1.3 * at_75.stat().st_size
