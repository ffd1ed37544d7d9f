set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_sweep_load_row3.png.tmp.27114'
$m << EOD
0.0761029 0.152183 0.0738511 0.119393 0.113856 0.138189 0.202275 0.12415
0.115165 0.114407 0.117394 0.0980699 0.155446 0.163741 0.167808 0.0679687
EOD
set title "Similarity-Aware, cosine τ=0.3: load (last epoch, first\nseed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
